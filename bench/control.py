"""Control-loop benchmark: the real controller process at 500 Hz against the simulated door robot.

    .venv/bin/python bench/control.py [--seconds 60] [--rate 500] [--policy policies/door.onnx]
    .venv/bin/python bench/control.py --robot network [--seconds 60] [--loss 0.05]

Without --policy it exports a 39-256-256-28 MLP (the trainer's default actor size) for the
door task. It prints, with ratios beside the absolute times:
  - bare onnxruntime: the same model, one observation per call, in a tight loop (this process);
  - safety layer alone: filter_action on the same observations and actions (this process);
  - the deployed loop (separate robot and controller processes, robot stepping door at 100 Hz):
    step latency (observation read -> command sent) p50/p99/p99.9/max, the time from the
    period boundary to the command, deadline misses, and everything besides inference
    (process boundary + safety layer + bookkeeping before the send) against bare inference.
Targets (issue 5): zero misses at 500 Hz, p99 step latency < 200 us, non-inference < 2x inference.

With `--robot network` the robot process drives the arm server (drivers/network.py) over UDP on
loopback for door (controller at 100 Hz), push (25 Hz) and reach (500 Hz), `--seconds` each:
directly, and then (with `--loss`) again through a relay (SCHED_FIFO, like the robot process)
dropping that fraction of the datagrams each way. It prints per run whether the loop
kept its rate (controller deadline misses, robot-process and arm-server overruns), how often the
robot and the arm held and why, and, from the arm's own record, whether any command it applied
was older than its timeout or outside the bounds (target: none; issue 34).
The machine's load average is printed before and after: other work on these 2 cores shows up here.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from awac_robot.control import safety
from awac_robot.control.drivers.loading import DriverDefinition
from awac_robot.control.drivers.network import LossyLink
from awac_robot.control.limits import MAX_CONSECUTIVE_MISSES, default_config
from awac_robot.control.runlog import load_log, summarize
from awac_robot.control.supervisor import CONTROLLER_LOG, ROBOT_LOG, Supervisor
from awac_robot.control.watchdog import HOLD_REASONS
from awac_robot.envs import get_spec
from awac_robot.export import ActorToExport, policy_metadata, write_onnx
from awac_robot.onnx_policy import OnnxPolicy

NETWORK = "awac_robot.control.drivers.network:NetworkDriver"


def mlp_policy(path: Path, task: str = "door") -> Path:
    spec = get_spec(task)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(spec.obs_dim, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, spec.act_dim),
        torch.nn.Tanh(),
    ).eval()
    write_onnx(net, spec, path, policy_metadata(ActorToExport(net, spec, "bench-mlp", 0)))
    return path


def percentiles(micros: np.ndarray) -> str:
    p50, p99, p999 = np.percentile(micros, [50, 99, 99.9])
    return f"p50 {p50:7.1f}  p99 {p99:7.1f}  p99.9 {p999:7.1f}  max {micros.max():8.1f} us"


def time_calls(call: Callable[[Any], object], inputs: Sequence[Any], repeats: int) -> np.ndarray:
    for item in inputs[:200]:
        call(item)
    out = np.empty(repeats)
    clock = time.perf_counter_ns
    for i in range(repeats):
        item = inputs[i % len(inputs)]
        start = clock()
        call(item)
        out[i] = clock() - start
    return out / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--prewarm", type=float, help="seconds of dry run before each boundary (default: config's)")
    parser.add_argument("--policy", type=Path, help="an exported door policy (default: a fresh 39-256-256-28 MLP)")
    parser.add_argument("--robot", choices=("sim", "network"), default="sim", help="the robot driver")
    parser.add_argument("--loss", type=float, default=0.0, help="--robot network: datagrams dropped each way")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench-control-"))
    if args.robot == "network":
        network_bench(work, args.seconds, args.loss)
        return
    policy_path = args.policy or mlp_policy(work / "door.onnx")
    spec = get_spec("door")
    base = default_config(spec)
    # measure the loop, not the safe stops: the most misses in a row and the longest robot watchdog the limits allow
    longest = replace(
        base.limits, max_consecutive_misses=MAX_CONSECUTIVE_MISSES, command_timeout=10 * spec.control_period
    )
    config = replace(base, rate=args.rate, limits=longest)
    if args.prewarm is not None:
        config = replace(config, prewarm=args.prewarm)
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores")

    print(f"\n== deployed loop: {args.rate:g} Hz for {args.seconds:g} s, robot process stepping door at 100 Hz ==")
    run_dir = work / "run"
    result = Supervisor(policy_path, config, args.seconds, run_dir, seed=0, out=sys.stderr).run()
    if not result.ok:
        print(f"the run FAILED: {'; '.join(result.problems)} (figures below cover the steps before it)")
    columns, meta = load_log(run_dir / CONTROLLER_LOG)
    summary = summarize(columns, meta["period"])
    run = columns["mode"] == 1
    step_us = ((columns["t_sent"] - columns["t_wake"]) * 1e6)[run]
    infer_us = (columns["t_infer"] * 1e6)[run]
    rest_us = step_us - infer_us
    print(f"controller scheduling: {meta['scheduling']}, prewarm {config.prewarm * 1e6:.0f} us")
    print(f"steps {summary['steps']}  rate {summary['rate_hz']:.1f} Hz  deadline misses {summary['deadline_misses']}")
    print(f"step latency (read -> sent)   {percentiles(step_us)}")
    print(f"period boundary -> sent       {percentiles((columns['t_sent'] - columns['t_boundary'])[run] * 1e6)}")
    print(f"inference inside the loop     {percentiles(infer_us)}")
    print(f"everything but inference      {percentiles(rest_us)}")
    print(f"safety events: {summary['events']}  robot: {result.robot}")

    print("\n== the same pieces alone, in this process ==")
    policy = OnnxPolicy(policy_path)
    obs = list(columns["obs"][run][:5000])
    bare = time_calls(policy, obs, 20_000)
    lim = safety.compile_limits(config.limits, config.period)
    actions = columns["raw_action"][run][:5000]
    last = columns["command"][run][:5000]
    pairs = list(zip(actions, obs, last, strict=False))
    filtered = time_calls(lambda p: safety.filter_action(p[0], p[1], p[2], lim), pairs, 20_000)
    print(f"bare onnxruntime call         {percentiles(bare)}")
    print(f"safety layer (filter_action)  {percentiles(filtered)}")

    b50, b99 = np.percentile(bare, [50, 99])
    r50, r99 = np.percentile(rest_us, [50, 99])
    s99 = np.percentile(step_us, 99)
    print("\n== against the targets ==")
    print(f"deadline misses at {args.rate:g} Hz: {summary['deadline_misses']} (target 0)")
    print(f"p99 step latency: {s99:.1f} us (target < 200 us)")
    print(
        f"non-inference / bare inference: p50 {r50:.1f}/{b50:.1f} us = {r50 / b50:.2f}x, "
        f"p99 {r99:.1f}/{b99:.1f} us = {r99 / b99:.2f}x (target < 2x)"
    )
    i50 = np.percentile(infer_us, 50)
    print(f"non-inference / inference inside the loop (p50): {r50:.1f}/{i50:.1f} us = {r50 / i50:.2f}x")
    print(f"safety layer / bare inference (p50): {np.percentile(filtered, 50) / b50:.2f}x")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


#: the tasks the network driver is measured on, with the controller rate of each (Hz)
NETWORK_TASKS = (("door", 100.0), ("push", 25.0), ("reach", 500.0))


def network_bench(work: Path, seconds: float, loss: float) -> None:
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores")
    for task, rate in NETWORK_TASKS:
        for link_loss in (None, loss) if loss else (None,):
            network_run(work / f"{task}-{'direct' if link_loss is None else 'lossy'}", task, rate, seconds, link_loss)
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


def network_run(folder: Path, task: str, rate: float, seconds: float, loss: float | None) -> None:
    """One deployment over loopback: straight to the arm server, or (`loss` given) through a lossy relay."""
    spec = get_spec(task)
    base = default_config(spec)
    # the most misses in a row the limits allow, so a stall is counted rather than ending the run
    config = replace(base, rate=rate, limits=replace(base.limits, max_consecutive_misses=MAX_CONSECUTIVE_MISSES))
    folder.mkdir()
    command = [sys.executable, "-m", "awac_robot.control.drivers.network", "--task", task, "--port", "0"]
    command += ["--log", str(folder / "arm.runlog"), "--seconds", str(seconds + 120)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    port = int(server.stdout.readline().split()[5].rsplit(":", 1)[1])
    link = None if loss is None else LossyLink(("127.0.0.1", port), loss=loss, seconds=seconds + 120, priority=8)
    robot = DriverDefinition(NETWORK, {"port": link.port if link else port, "host": "127.0.0.1"}, "bench")
    way = "directly" if link is None else f"through a relay losing {loss:.0%} each way"
    print(
        f"\n== network driver, {task}: controller {rate:g} Hz, robot and arm {spec.control_rate:g} Hz, "
        f"{seconds:g} s, {way} =="
    )
    with open(folder / "status.txt", "w") as status:
        policy = mlp_policy(folder / "policy.onnx", task)
        result = Supervisor(policy, config, seconds, folder / "run", seed=0, out=status, robot=robot).run()
    if link is not None:
        link.stop()
    server.terminate()
    server.wait(10)
    report_network_run(folder, result, config, link)


def ms_p50_max(seconds: np.ndarray) -> str:
    return f"p50 {np.nanpercentile(seconds, 50) * 1e3:.1f} max {np.nanmax(seconds) * 1e3:.1f}"


def report_network_run(folder: Path, result: Any, config: Any, link: LossyLink | None) -> None:
    columns, meta = load_log(folder / "run" / CONTROLLER_LOG)
    summary = summarize(columns, meta["period"])
    rows, _ = load_log(folder / "run" / ROBOT_LOG)
    arm, arm_meta = load_log(folder / "arm.runlog")
    lat = summary["step_latency_us"]
    print(f"run {'ok' if result.ok else 'FAILED: ' + '; '.join(result.problems)}")
    print(
        f"controller: {summary['steps']} steps at {summary['rate_hz']:.1f} Hz (target {summary['target_rate_hz']:g}), "
        f"deadline misses {summary['deadline_misses']}, step latency p50 {lat['p50']:.1f} p99 {lat['p99']:.1f} us, "
        f"safe stop {summary['safe_stop']}"
    )
    held = rows["mode"] == 2
    reasons = {name: int(np.count_nonzero(rows["held_by"][held] & bit)) for name, bit in HOLD_REASONS.items()}
    print(
        f"robot process: {len(rows['t'])} steps, overruns {result.robot['overruns']}, held {int(held.sum())} "
        f"({', '.join(f'{k} {v}' for k, v in reasons.items() if v) or 'never'}), "
        f"state age ms {ms_p50_max(rows['state_age'])}"
    )
    mode = arm["mode"]
    applied = mode != 2
    lim = safety.compile_limits(config.limits, get_spec(config.task).control_period)
    outside = int(
        np.count_nonzero(~np.all((arm["applied"] >= lim.bound_low) & (arm["applied"] <= lim.bound_high), axis=1))
    )
    too_old = int(np.count_nonzero(arm["command_age"][applied] > arm_meta["timeout"]))
    print(
        f"arm: {len(mode)} steps, overruns {arm_meta['overruns']}; applied {int(np.count_nonzero(mode == 1))}, "
        f"motion stopped (decided on an older state) {int(np.count_nonzero(mode == 3))}, "
        f"held {int(np.count_nonzero(mode == 2))}; "
        f"commands refused {arm_meta['refused']}, out of order {arm_meta['out_of_order']}"
    )
    print(
        f"arm applied a command older than its timeout ({arm_meta['timeout'] * 1e3:.0f} ms): {too_old} times; "
        f"outside the bounds: {outside} times (target 0 and 0); "
        f"command age ms {ms_p50_max(arm['command_age'][applied])}"
    )
    if link is not None:
        print(f"link: {link.delivered} datagrams delivered, {link.dropped} dropped")
    sustained = summary["deadline_misses"] == 0 and result.robot["overruns"] == 0 and arm_meta["overruns"] == 0
    print(
        f"sustains the rate: {'yes' if sustained else 'NO'} (controller misses {summary['deadline_misses']}, "
        f"robot overruns {result.robot['overruns']}, arm overruns {arm_meta['overruns']})"
    )


if __name__ == "__main__":
    main()
