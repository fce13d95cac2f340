"""The arm server as a real process on loopback, for the network driver's tests (always bounded in time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from awac_robot.control.drivers.loading import DriverDefinition

NETWORK_DRIVER = "awac_robot.control.drivers.network:NetworkDriver"


class ArmServerProcess:
    """`python -m awac_robot.control.drivers.network` on 127.0.0.1, a free port, stopping by itself after `seconds`."""

    def __init__(self, task: str, log: Path | None = None, seconds: float = 60.0, seed: int = 0) -> None:
        command = [sys.executable, "-m", "awac_robot.control.drivers.network", "--task", task, "--port", "0"]
        command += ["--seconds", str(seconds), "--seed", str(seed)] + (["--log", str(log)] if log else [])
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "arm server: task push on 127.0.0.1:PORT pid N"
        assert line.startswith("arm server:"), f"the arm server did not start: {line!r}"
        self.port = int(line.split()[5].rsplit(":", 1)[1])
        self.pid = self.process.pid

    def definition(self, port: int | None = None) -> DriverDefinition:
        """The network driver reaching this server (or a relay in front of it, at `port`)."""
        return DriverDefinition(NETWORK_DRIVER, {"port": port or self.port, "host": "127.0.0.1"}, "test")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(10)
