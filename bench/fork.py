"""Online phases forked from one offline checkpoint, to compare online settings on equal footing.

Usage: .venv/bin/python bench/fork.py RUN_CHECKPOINT STORE OUT [--set KEY=YAML ...] [--online-steps N]

The learning issue asks what happens in the first few thousand online updates. A full suite run
spends most of its time on the 25k offline updates, which are the same for every online setting;
a fork starts the online phase from an offline-end checkpoint (`counters.offline_done`), or from one
inside the offline phase handed over as its end (`--set offline_steps=` its update count), with some
config keys replaced (`--set explore_noise=[0.1] --set eval_interval=1000`), on a fresh copy of
the scenario's cached store, through the product's own `finetune --resume`. Only keys that act
online make sense here (the checkpoint's networks, optimizer and RNGs are kept as they were):
`ONLINE_KEYS` lists them, and the suite (bench/suite.py) forks every candidate whose config
differs from another's in those keys alone from the same cached offline runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from awac_robot.train.checkpoint import read_checkpoint, save_checkpoint
from awac_robot.train.config import from_saved, save_config
from awac_robot.train.runlog import METRICS, RunLog

ROOT = Path(__file__).resolve().parent.parent
#: The config keys that act only after the offline phase ends: two configs that differ in these alone share their
#: offline phase to the last bit. Everything else (the update, the networks, `handover`, which acts at the switch
#: from the offline evaluations, `report_episodes`, which scores the handover) shapes the offline checkpoint too.
ONLINE_KEYS = (
    "online_steps", "updates_per_step", "offline_fraction", "imitate_online", "explore_mean", "explore_noise",
    "explore_choice", "explore_memory", "eval_interval",
)  # fmt: skip


def fork(checkpoint: Path, store: Path, out: Path, changes: dict[str, object]) -> list[str]:
    """Write OUT as a run stopped at the checkpoint with `changes` in its config; returns the resume command."""
    state = read_checkpoint(checkpoint)
    if out.exists():
        raise SystemExit(f"fork: {out} exists; choose another OUT")
    config = from_saved({**state["config"], **changes}, "--set")
    updates = state["counters"]["updates"]
    if not state["counters"]["offline_done"] and config.offline_steps != updates:
        raise SystemExit(
            f"fork: {checkpoint} is inside the offline phase; to hand it over as the offline end (as `handover:"
            f" best` would), add --set offline_steps={updates}"
        )
    state["config"] = config.to_dict()
    if config.offline_steps > updates:  # a longer offline phase: continue it instead
        state["counters"]["offline_done"] = False
    state.pop("path")
    state.pop("format")
    save_checkpoint(out, updates, state, keep=1)
    save_config(config, out / "config.yaml")
    source = Path(checkpoint).resolve().parent.parent / METRICS
    rows = [r for r in RunLog(source.parent).rows() if r.get("updates", 0) <= updates] if source.exists() else []
    (out / METRICS).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    shutil.copytree(store, out / "store.zarr")
    exe = Path(sys.executable).parent / "awac-robot"
    return [str(exe), "finetune", "--task", config.task, "--out", str(out), "--resume"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("store", type=Path, help="the scenario's store as the run began (its cached copy)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=YAML", help="a config key to replace")
    parser.add_argument("--online-steps", type=int, default=5000)
    args = parser.parse_args()
    changes: dict[str, object] = {"online_steps": args.online_steps}
    for item in args.set:
        key, _, value = item.partition("=")
        changes[key] = yaml.safe_load(value)
    command = fork(args.checkpoint, args.store, args.out, changes)
    command += ["--store", str(args.out / "store.zarr"), "--no-progress"]
    print("fork:", " ".join(command), flush=True)
    raise SystemExit(subprocess.call(command, cwd=ROOT))


if __name__ == "__main__":
    main()
