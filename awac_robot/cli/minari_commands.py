"""`awac-robot demos import minari` and `demos export minari`: argument parsing and printing only."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from awac_robot.cli.collect import default_store
from awac_robot.minari_io import export_minari, import_minari
from awac_robot.outputs import STORE, check_output_folder

Handler = Callable[[argparse.Namespace], int]


def register(
    import_formats: argparse._SubParsersAction[argparse.ArgumentParser],
    export_formats: argparse._SubParsersAction[argparse.ArgumentParser],
    wrap: Callable[[Handler], Handler],
) -> None:
    """Add `minari` under `demos import` and `demos export`; `wrap` turns store errors into one-line errors."""
    imports = import_formats.add_parser(
        "minari",
        help="a Minari dataset on this machine (e.g. D4RL/door/human-v2)",
        description=(
            "Import a local Minari dataset (its directory, or its id under MINARI_DATASETS_PATH; nothing is "
            "downloaded) recorded in the task's env. Success comes from the recorded infos or the task's rule on "
            "the observations; see docs/store.md."
        ),
    )
    imports.add_argument("dataset", metavar="DATASET_DIR_OR_ID", help="dataset directory or local dataset id")
    imports.add_argument("--task", required=True, help="task the dataset was recorded in, e.g. door")
    imports.add_argument("--store", type=Path, help="store to append to, created if missing (default demos/TASK.zarr)")
    imports.add_argument(
        "--reward",
        choices=("sparse", "dense"),
        default="sparse",
        help="sparse (default): recomputed from success; dense: the recorded rewards, only from the task's dense env",
    )
    imports.set_defaults(handler=wrap(run_import))

    exports = export_formats.add_parser(
        "minari",
        help="a Minari dataset that minari.load_dataset opens",
        description=(
            "Write a store as the Minari dataset OUT/DATASET_ID (set MINARI_DATASETS_PATH=OUT to load it by id). "
            "Its env spec is awac_robot/TASK-v0, so dataset.recover_environment() builds the task's env."
        ),
    )
    exports.add_argument("store", type=Path, help="demo store directory")
    exports.add_argument("--out", type=Path, required=True, help="Minari datasets directory to write into")
    exports.add_argument("--dataset-id", help="NAMESPACE/NAME-vN (default awac-robot/TASK/demos-v0)")
    exports.set_defaults(handler=wrap(run_export))


def run_import(args: argparse.Namespace) -> int:
    store = check_output_folder(args.store or default_store(args.task), "--store", STORE)
    summary = import_minari(args.dataset, args.task, store, args.reward)
    print(
        f"imported {summary.episodes} episodes ({summary.steps} steps) of Minari dataset {summary.dataset_id} "
        f"(recorded in {summary.env_id}) into {store}; {summary.successes} reach the goal"
    )
    notes = [f"success from {' and '.join(sorted(summary.success_from))}", f"{args.reward} rewards"]
    if summary.cut_episodes:
        notes.append(f"{summary.cut_episodes} episodes cut where task {args.task!r} ends them")
    if summary.clipped_actions:
        notes.append(f"clipped {summary.clipped_actions} of {summary.total_actions} action entries to [-1, 1]")
    if summary.unknown_seeds:
        notes.append(f"{summary.unknown_seeds} seeds beyond int64 stored as unknown (-1)")
    print("; ".join(notes))
    return 0


def run_export(args: argparse.Namespace) -> int:
    check_output_folder(args.out, "--out", None)
    summary = export_minari(args.store, args.out, args.dataset_id)
    print(f"exported {summary.episodes} episodes ({summary.steps} steps) of {args.store} to {summary.path}")
    print(
        f"load it with: MINARI_DATASETS_PATH={args.out} python -c "
        f"\"import minari; minari.load_dataset('{summary.dataset_id}')\""
    )
    return 0
