"""`awac-robot demos`: look inside, merge and import demo stores."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from awac_robot.cli import minari_commands
from awac_robot.cli.collect import default_store
from awac_robot.cli.errors import UserError
from awac_robot.importers import import_dapg
from awac_robot.store import StoreError
from awac_robot.store_ops import describe, merge_stores


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demos",
        help="inspect, merge, import and export demo stores",
        description="Inspect, merge, import and export Zarr demo stores (format: docs/store.md).",
    )
    actions = parser.add_subparsers(dest="demos_command", metavar="ACTION", required=True)

    info = actions.add_parser("info", help="task, episodes, steps, success by source, size and compression")
    info.add_argument("store", type=Path, help="demo store directory")
    info.set_defaults(handler=_user_errors(run_info))

    merge = actions.add_parser("merge", help="merge stores of the same task into a new store")
    merge.add_argument("inputs", type=Path, nargs="+", metavar="STORE", help="stores to merge (same task and reward)")
    merge.add_argument("--out", type=Path, required=True, help="new store to create (must not exist)")
    merge.set_defaults(handler=_user_errors(run_merge))

    imports = actions.add_parser("import", help="import demonstrations recorded by another project")
    import_formats = imports.add_subparsers(dest="format", metavar="FORMAT", required=True)
    dapg = import_formats.add_parser("dapg", help="the DAPG/Adroit demo pickles")
    dapg.add_argument("file", type=Path, help="file to import")
    dapg.add_argument("--task", required=True, help="task the demos were recorded in, e.g. door")
    dapg.add_argument("--store", type=Path, help="store to append to, created if missing (default demos/TASK.zarr)")
    dapg.set_defaults(handler=_user_errors(run_import))

    exports = actions.add_parser("export", help="write a store in another project's format")
    export_formats = exports.add_subparsers(dest="format", metavar="FORMAT", required=True)
    minari_commands.register(import_formats, export_formats, _user_errors)


def _user_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Store problems are the user's to fix (wrong path, foreign store): one line, not a traceback."""

    def run(args: argparse.Namespace) -> int:

        try:
            return handler(args)
        except StoreError as exc:
            raise UserError(str(exc)) from None

    return run


def run_info(args: argparse.Namespace) -> int:
    info = describe(args.store)
    print(f"store      {info.path}  (format {info.format_version}, awac-robot {info.written_by}, {info.created_utc})")
    print(f"task       {info.task}  (obs {info.obs_dim}, act {info.act_dim}), {info.reward_mode} reward")
    print(f"episodes   {info.episodes}, steps {info.steps}")
    print(
        f"size       {info.disk_bytes / 1e6:.2f} MB on disk, {info.raw_bytes / 1e6:.2f} MB raw, "
        f"compression {info.compression_ratio:.2f}x"
    )
    if info.by_source:
        print(f"{'source':<18} {'episodes':>8} {'steps':>9} {'success':>8}")
        for source, stats in info.by_source.items():
            print(f"{source:<18} {stats.episodes:>8} {stats.steps:>9} {stats.success_rate:>8.1%}")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    count = merge_stores(args.inputs, args.out)
    print(f"merged {len(args.inputs)} stores into {args.out}: {count} episodes")
    return 0


def run_import(args: argparse.Namespace) -> int:
    store = args.store or default_store(args.task)
    summary = import_dapg(args.file, args.task, store)
    print(
        f"imported {summary.episodes} episodes ({summary.steps} steps) from {args.file} into {store} "
        f"as source 'human'; {summary.successes} reach the goal"
    )
    print(
        f"dropped each episode's last action (no observation after it was recorded); "
        f"clipped {summary.clipped_actions} of {summary.total_actions} action entries to [-1, 1]"
    )
    return 0
