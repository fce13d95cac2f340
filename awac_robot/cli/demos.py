"""`awac-robot demos`: look inside, merge, filter, split, upgrade and import demo stores."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from awac_robot.cli import minari_commands
from awac_robot.cli.collect import default_store
from awac_robot.cli.errors import UserError
from awac_robot.importers import import_dapg
from awac_robot.outputs import STORE, check_output_folder
from awac_robot.store import StoreError
from awac_robot.store_ops import (
    DimStats,
    EpisodeFilter,
    StoreInfo,
    describe,
    filter_store,
    merge_stores,
    split_store,
)
from awac_robot.store_upgrade import upgrade_store


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demos",
        help="inspect, merge, filter, split, import and export demo stores",
        description="Inspect, merge, filter, split, import and export Zarr demo stores (format: docs/store.md).",
    )
    actions = parser.add_subparsers(dest="demos_command", metavar="ACTION", required=True)

    info = actions.add_parser(
        "info", help="task, size, episodes by source, provenance of each batch; per episode and statistics on request"
    )
    info.add_argument("store", type=Path, help="demo store directory")
    info.add_argument("--episodes", action="store_true", help="one row per episode: source, batch, seed, length, ...")
    info.add_argument("--stats", action="store_true", help="min/max/mean/std of every observation and action entry")
    info.add_argument("--json", action="store_true", help="everything (incl. episodes and statistics) as JSON")
    info.set_defaults(handler=_user_errors(run_info))

    merge = actions.add_parser("merge", help="merge stores of the same task into a new store")
    merge.add_argument("inputs", type=Path, nargs="+", metavar="STORE", help="stores to merge (same task and reward)")
    merge.add_argument("--out", type=Path, required=True, help="new store to create (must not exist)")
    merge.set_defaults(handler=_user_errors(run_merge))

    filters = actions.add_parser(
        "filter",
        help="copy the episodes that match into a new store",
        description=(
            "Copy the episodes that match every criterion given (or, with --exclude, all others) into a new "
            "store. A source name also selects its members, as in training's --sources: "
            "'online' every online run, 'imported' every import."
        ),
    )
    filters.add_argument("store", type=Path, help="demo store to read")
    filters.add_argument("--out", type=Path, required=True, help="new store to create (must not exist)")
    filters.add_argument("--source", action="append", default=[], metavar="SOURCE[,SOURCE]", help="episode sources")
    filters.add_argument(
        "--run", action="append", default=[], metavar="RUN_ID[,RUN_ID]", help="online runs (source online:RUN_ID)"
    )
    filters.add_argument("--episodes", metavar="START:STOP", help="episode index range, stop excluded (e.g. 0:50)")
    filters.add_argument("--success", choices=("yes", "no"), help="only successful (yes) or failed (no) episodes")
    filters.add_argument("--exclude", action="store_true", help="keep the episodes that do NOT match")
    filters.set_defaults(handler=_user_errors(run_filter))

    split = actions.add_parser("split", help="split a store by episode into new train and validation stores")
    split.add_argument("store", type=Path, help="demo store to read")
    split.add_argument("--val", type=float, default=0.1, help="fraction of episodes for validation (default 0.1)")
    split.add_argument("--seed", type=int, default=0, help="seed of the random choice of episodes (default 0)")
    split.add_argument("--out-train", type=Path, required=True, help="new train store (must not exist)")
    split.add_argument("--out-val", type=Path, required=True, help="new validation store (must not exist)")
    split.set_defaults(handler=_user_errors(run_split))

    upgrade = actions.add_parser("upgrade", help="upgrade a store of format version 1 in place")
    upgrade.add_argument("store", type=Path, help="demo store directory")
    upgrade.set_defaults(handler=_user_errors(run_upgrade))

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
    full = args.json
    info = describe(args.store, episodes=full or args.episodes, stats=full or args.stats)
    if args.json:
        print(json.dumps(info.to_json(), indent=1))
        return 0
    for line in info_lines(info):
        print(line)
    return 0


def info_lines(info: StoreInfo) -> list[str]:
    lines = [
        f"store      {info.path}  (format {info.format_version}, id {info.store_id}, awac-robot {info.written_by}, "
        f"{info.created_utc})",
        f"task       {info.task}  (obs {info.obs_dim}, act {info.act_dim}), {info.reward_mode} reward",
        f"episodes   {info.episodes}, steps {info.steps}",
        f"size       {info.disk_bytes / 1e6:.2f} MB on disk, {info.raw_bytes / 1e6:.2f} MB raw, "
        f"compression {info.compression_ratio:.2f}x",
    ]
    if info.derived_from:
        derived = info.derived_from
        inputs = ", ".join(f"{entry['path']} ({entry['episodes']} episodes)" for entry in derived["inputs"])
        lines.append(f"made by    {derived['operation']} of {inputs}, {derived['utc']}: {derived['command']}")
    if info.by_source:
        lines.append(f"{'source':<22} {'episodes':>8} {'steps':>9} {'success':>8} {'mean return':>11}  seeds / batches")
        for source, stats in info.by_source.items():
            batches = ",".join(str(b) for b in stats.batches)
            lines.append(
                f"{source:<22} {stats.episodes:>8} {stats.steps:>9} {stats.success_rate:>8.1%} "
                f"{stats.mean_return:>11.2f}  {stats.seeds} / {batches}"
            )
    for entry in info.batches:
        batch = entry.batch
        low, high = batch.seed_range or (None, None)
        seeds = "-" if low is None else str(low) if low == high else f"{low}-{high}"
        lines.append(
            f"batch {entry.index}: {batch.kind} by {batch.demonstrator or '?'}, noise {_or_dash(batch.noise)}, "
            f"perturb {_or_dash(batch.perturb)}, seeds {seeds}, {entry.episodes} episodes "
            f"({', '.join(entry.sources)}), {batch.started_utc or '?'} on {batch.host or '?'}, "
            f"awac-robot {batch.awac_robot_version or '?'}"
        )
        if batch.command:
            lines.append(f"         {batch.command}")
    if info.episode_rows is not None:
        lines.append(f"{'episode':>7} {'source':<22} {'batch':>5} {'seed':>7} {'length':>6} {'return':>9} success")
        for row in info.episode_rows:
            lines.append(
                f"{row.index:>7} {row.source:<22} {row.batch:>5} {row.seed:>7} {row.length:>6} "
                f"{row.total_return:>9.2f} {'yes' if row.success else 'no'}"
            )
    for title, dims in (("observation", info.obs_stats), ("action", info.action_stats)):
        if dims is not None:
            lines.append(f"{title:<28} {'min':>10} {'max':>10} {'mean':>10} {'std':>10}")
            lines.extend(_stats_line(entry) for entry in dims)
    return lines


def _stats_line(entry: DimStats) -> str:
    return f"  {entry.name:<26} {entry.min:>10.4g} {entry.max:>10.4g} {entry.mean:>10.4g} {entry.std:>10.4g}"


def _or_dash(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def run_merge(args: argparse.Namespace) -> int:
    count = merge_stores(args.inputs, args.out)
    print(f"merged {len(args.inputs)} stores into {args.out}: {count} episodes")
    return 0


def run_filter(args: argparse.Namespace) -> int:
    start, stop = _episode_range(args.episodes) if args.episodes else (None, None)
    selection = EpisodeFilter(
        sources=_names(args.source),
        runs=_names(args.run),
        start=start,
        stop=stop,
        success=None if args.success is None else args.success == "yes",
        exclude=args.exclude,
    )
    if selection == EpisodeFilter(exclude=args.exclude):
        raise UserError("give at least one of --source, --run, --episodes, --success (without them nothing is chosen)")
    summary = filter_store(args.store, args.out, selection)
    print(f"kept {summary.kept} of {summary.total} episodes of {args.store} in {args.out}")
    return 0


def _names(values: list[str]) -> tuple[str, ...]:
    return tuple(name.strip() for value in values for name in value.split(",") if name.strip())


def _episode_range(text: str) -> tuple[int | None, int | None]:
    start, colon, stop = text.partition(":")
    try:
        if not colon:
            raise ValueError(text)
        return (int(start) if start else None, int(stop) if stop else None)
    except ValueError:
        raise UserError(f"--episodes {text!r} is not START:STOP (e.g. 0:50, 100: or :20)") from None


def run_split(args: argparse.Namespace) -> int:
    summary = split_store(args.store, args.val, args.seed, args.out_train, args.out_val)
    print(
        f"split {args.store} by episode (seed {args.seed}): {summary.train} episodes in {args.out_train}, "
        f"{summary.val} in {args.out_val}"
    )
    return 0


def run_upgrade(args: argparse.Namespace) -> int:
    summary = upgrade_store(args.store)
    print(
        f"upgraded {summary.path} from format {summary.from_version} to {summary.to_version}: "
        f"{summary.episodes} episodes, {summary.steps} steps, one batch of kind 'unrecorded'"
    )
    return 0


def run_import(args: argparse.Namespace) -> int:
    store = check_output_folder(args.store or default_store(args.task), "--store", STORE)
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
