"""An example robot driver: an arm whose own servo loop runs beside the robot process (docs/deploy.md).

Here the "arm" is the task simulated in a thread at the task's rate, the way a vendor's arm
controller keeps running between calls; replace `_servo` and the `make_env` line with your SDK.
Drill it with: PYTHONPATH=docs awac-robot check-robot --task push --robot example_driver:ExampleArmDriver
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from awac_robot.control.drivers import Measurement, RobotDriver
from awac_robot.control.drivers.sim import pose_hold_target
from awac_robot.control.limits import motion_dims
from awac_robot.envs import make_env
from awac_robot.spec import TaskSpec


@dataclass(frozen=True)
class ArmSettings:
    servo_rate: float = 0.0  # Hz of the arm's own loop (0: the task's control rate)


class ExampleArmDriver(RobotDriver):
    Settings = ArmSettings

    def __init__(self, spec: TaskSpec, settings: ArmSettings, seed: int | None) -> None:
        self.env = make_env(spec.name, seed=seed)  # connect to the arm here
        obs, _ = self.env.reset()
        self.period, self.motion = 1.0 / (settings.servo_rate or spec.control_rate), motion_dims(spec)
        self.lock = threading.Lock()
        self.target: np.ndarray | None = None  # None: hold
        self.held: np.ndarray | None = pose_hold_target(self.env, np.zeros(spec.act_dim), self.motion)
        self.state = Measurement(obs, time.perf_counter(), np.array(self.held))
        self.running = True
        self.servo = threading.Thread(target=self._servo, daemon=True)
        self.servo.start()

    def read(self) -> Measurement:
        with self.lock:
            return self.state  # the newest measurement with its own stamp, never re-stamped

    def apply(self, command: np.ndarray) -> None:
        with self.lock:
            self.target = command.copy()  # hand it over; the arm's loop picks it up

    def hold(self) -> None:
        with self.lock:
            self.target = None

    def close(self) -> None:
        self.running = False
        self.servo.join()
        self.env.close()

    def _servo(self) -> None:
        """The arm's loop: step with the newest target, or hold the pose latched when the hold began."""
        while self.running:
            with self.lock:
                target, applied = self.target, self.state.applied
            if target is None:
                if self.held is None:  # latched once: re-reading the pose every step would follow any sag
                    self.held = pose_hold_target(self.env, applied, self.motion)
                target = self.held
            else:
                self.held = None
            obs, _, terminated, truncated, _ = self.env.step(target)
            if terminated or truncated:
                obs, _ = self.env.reset()
                self.held = None  # a new pose to hold
            with self.lock:
                self.state = Measurement(obs, time.perf_counter(), target.copy())
            time.sleep(self.period)
