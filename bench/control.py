"""Control-loop benchmark: the real controller process at 500 Hz against the simulated door robot.

    .venv/bin/python bench/control.py [--seconds 60] [--rate 500] [--policy policies/door.onnx]

Without --policy it exports a 39-256-256-28 MLP (the trainer's default actor size) for the
door task. It prints, with ratios beside the absolute times:
  - bare onnxruntime: the same model, one observation per call, in a tight loop (this process);
  - safety layer alone: filter_action on the same observations and actions (this process);
  - the deployed loop (separate robot and controller processes, robot stepping door at 100 Hz):
    step latency (observation read -> command sent) p50/p99/p99.9/max, the time from the
    period boundary to the command, deadline misses, and everything besides inference
    (process boundary + safety layer + bookkeeping before the send) against bare inference.
Targets (issue 5): zero misses at 500 Hz, p99 step latency < 200 us, non-inference < 2x inference.
The machine's load average is printed before and after: other work on these 2 cores shows up here.
"""

from __future__ import annotations

import argparse
import os
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
from awac_robot.control.limits import MAX_CONSECUTIVE_MISSES, default_config
from awac_robot.control.runlog import load_log, summarize
from awac_robot.control.supervisor import CONTROLLER_LOG, Supervisor
from awac_robot.envs import get_spec
from awac_robot.export import ActorToExport, policy_metadata, write_onnx
from awac_robot.onnx_policy import OnnxPolicy


def mlp_policy(path: Path) -> Path:
    spec = get_spec("door")
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
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench-control-"))
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


if __name__ == "__main__":
    main()
