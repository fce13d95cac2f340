"""`awac-robot render | replay | plot`: see a task, a stored episode, a deployment, a training run.

Rendering is headless (EGL when there is no display); plots need no GL at all.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from awac_robot.cli.errors import UserError
from awac_robot.envs import FRAME_SIZE
from awac_robot.outputs import check_output_file


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "render",
        help="write a picture of a task right after reset",
        description="Write one frame of TASK after env.reset(seed), rendered offscreen (EGL when there is no display).",
    )
    parser.add_argument("--task", required=True, help="task name (see `awac-robot tasks`) or task YAML")
    parser.add_argument("--out", type=Path, help="picture to write, .png or .jpg (default TASK.png)")
    parser.add_argument("--seed", type=int, default=0, help="reset seed: the task's random start")
    parser.add_argument("--size", type=int, default=480, help="frame width and height in pixels")
    parser.add_argument("--force", action="store_true", help="replace an existing file at the output path")
    parser.set_defaults(handler=run_render)

    parser = subparsers.add_parser(
        "replay",
        help="simulate stored episodes or a deployment again, check them, and film them",
        description=(
            "Re-simulate episodes of a demo store from their stored seed and actions, or a deployment from the "
            "robot's record (--log), and check that the observations match the recording (they do, bit for bit, "
            "on the pinned simulator). Optionally write a video (.mp4 or .gif) of them one after another, or a "
            "contact sheet (--grid) of several."
        ),
    )
    parser.add_argument("store", type=Path, nargs="?", help="demo store (.zarr)")
    parser.add_argument("--episode", type=int, nargs="+", metavar="N", help="episode index(es) of the store")
    parser.add_argument("--log", type=Path, help="instead of a store: a deploy run folder (`deploy --log DIR`)")
    parser.add_argument("--video", type=Path, help="write the episodes as one video, .mp4 or .gif")
    parser.add_argument("--grid", type=Path, help="write a contact sheet .png: a row per episode, frames across")
    parser.add_argument("--columns", type=int, default=6, help="frames per episode on the contact sheet")
    parser.add_argument("--size", type=int, help=f"frame size in pixels (default {FRAME_SIZE}; sheet 160)")
    parser.add_argument("--force", action="store_true", help="replace an existing file at the output path")
    parser.set_defaults(handler=run_replay)

    parser = subparsers.add_parser(
        "plot",
        help="draw training runs: success curves, Q, advantage weights, losses, speed",
        description=(
            "Draw one figure of one or more run folders: eval success offline (vs updates) and online (vs env "
            "steps) with 95% Wilson bands, Q statistics, the advantage weights' effective sample size, losses and "
            "updates/s. Runs of the same task and algorithm (seeds) are drawn as their mean with the spread."
        ),
    )
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folders (train/finetune --out)")
    parser.add_argument("--out", type=Path, default=Path("plot.png"), help="figure to write (.png, .svg or .pdf)")
    parser.add_argument("--title", help="figure title (default: task, algorithm, runs and seeds)")
    parser.add_argument("--force", action="store_true", help="replace an existing file at the output path")
    parser.set_defaults(handler=run_plot)


def run_render(args: argparse.Namespace) -> int:
    from awac_robot.envs import make_env
    from awac_robot.rollout import check_seed
    from awac_robot.video import IMAGE_SUFFIXES, label, write_image

    _check_size(args.size)
    check_seed(args.seed)
    out = check_output_file(
        args.out or Path(f"{Path(args.task).stem}.png"), "--out", "picture", IMAGE_SUFFIXES, force=args.force
    )
    env = make_env(args.task, render_mode="rgb_array", size=args.size)
    try:
        env.reset(seed=args.seed)
        frame = label(env.render(), f"{env.config.name} after reset (seed {args.seed})")
    finally:
        env.close()
    write_image(out, frame)
    print(f"wrote {out} ({frame.shape[1]}x{frame.shape[0]})")
    return 0


def run_replay(args: argparse.Namespace) -> int:
    from awac_robot.replay import ReplayError, replay_deployment, replay_episodes
    from awac_robot.store import StoreError
    from awac_robot.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES, contact_sheet, write_image, write_video

    if (args.store is None) == (args.log is None):
        raise UserError("give a demo store with --episode N, or a deploy run folder with --log DIR")
    if args.store is not None and not args.episode:
        raise UserError(f"which episodes of {args.store}? pass --episode N [N ...]")
    if args.log is not None and args.episode:
        raise UserError("--episode picks episodes of a store; --log replays the whole deployment")
    if args.video:
        check_output_file(args.video, "--video", "video", VIDEO_SUFFIXES, force=args.force)
    if args.grid:
        check_output_file(args.grid, "--grid", "contact sheet", IMAGE_SUFFIXES, force=args.force)
    if args.video and args.grid:
        raise UserError("--video and --grid each film the episodes at their own size: ask for one at a time")
    if args.columns < 1:
        raise UserError(f"--columns must be at least 1, got {args.columns}")
    size = None
    if args.video or args.grid:
        size = args.size or (160 if args.grid else FRAME_SIZE)
        _check_size(size)
    try:
        if args.log is not None:
            deployed = replay_deployment(args.log, size)
            checks = [(r.check, r.film) for r in deployed]
            for r in deployed:
                solved = "solved" if r.replayed.solved else "not solved"
                print(f"robot episode {r.index} ({r.steps} steps, {solved}): {r.check.describe('the robot record')}")
        else:
            caption = "episode {index}" if args.grid else "{task} episode {index} (seed {seed})"
            results = replay_episodes(args.store, args.episode, size, caption)
            checks = [(r.check, r.film) for r in results]
            for result in results:
                stored = result.stored
                print(
                    f"episode {result.index} ({stored.source}, seed {stored.seed}, {stored.length} steps, "
                    f"{'solved' if stored.solved else 'not solved'}): {result.check.describe()}"
                )
    except (ReplayError, StoreError) as exc:
        raise UserError(str(exc)) from None
    films = [film for _, film in checks if film is not None]
    if args.video:
        frames = [frame for film in films for frame in film.frames]
        write_video(args.video, frames, films[0].fps)
        print(f"wrote {args.video} ({len(frames)} frames at {films[0].fps:g} fps, real time)")
    if args.grid:
        rows = [[film.frames[i] for i in _spread(len(film.frames), args.columns)] for film in films]
        sheet = write_image(args.grid, contact_sheet(rows))
        print(f"wrote {sheet} ({len(rows)} episodes x {args.columns} frames)")
    return 0 if all(check.exact for check, _ in checks) else 1


def _spread(count: int, wanted: int) -> list[int]:
    """`wanted` indices spread evenly over `count` frames, first and last included."""
    return sorted(set(np.linspace(0, count - 1, min(wanted, count)).round().astype(int).tolist()))


def _check_size(size: int) -> None:
    if not 16 <= size <= 2048 or size % 2:
        raise UserError(f"--size must be an even number of pixels in [16, 2048], got {size}")


def run_plot(args: argparse.Namespace) -> int:
    from awac_robot.train.plots import PlotError, Run, draw_runs

    check_output_file(args.out, "--out", "figure", (".png", ".svg", ".pdf"), force=args.force)
    try:
        runs = [Run.load(path) for path in args.runs]
        out = draw_runs(runs, args.out, args.title)
    except PlotError as exc:
        raise UserError(str(exc)) from None
    print(f"wrote {out} ({len(runs)} run{'s' if len(runs) > 1 else ''})")
    return 0
