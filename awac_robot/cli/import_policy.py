"""`awac-robot import-policy`: turn an expert published by another project into a verified awac-robot ONNX policy."""

from __future__ import annotations

import argparse
from pathlib import Path

from awac_robot.cli.errors import UserError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "import-policy",
        help="turn a published expert (DAPG weights) into a verified ONNX policy, a demonstrator for collect",
        description=(
            "Write an expert policy published by another project as an awac-robot ONNX policy with a policy card. "
            "dapg: the DAPG Adroit experts (.npz weights of a tanh MLP; format in docs/demonstrators.md). The file "
            "is written only once onnxruntime matches the numpy forward pass within 1e-5 on the expert's own "
            "rollouts. Then: awac-robot collect --task TASK --demonstrator policy:OUT."
        ),
    )
    parser.add_argument("format", choices=("dapg",), help="weight format (dapg: DAPG expert .npz)")
    parser.add_argument("weights", type=Path, help="weight file, e.g. pen_expert.npz")
    parser.add_argument("--task", required=True, help="task the expert was trained for, e.g. pen")
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write, e.g. policies/pen-dapg.onnx")
    parser.add_argument("--verify", type=int, default=2000, help="rollout observations to verify on (>= 1000)")
    parser.add_argument(
        "--eval-episodes", type=int, default=20, help="deterministic episodes measured for the card (0: skip)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from awac_robot.dapg_policy import PolicyImportError, import_dapg_policy
    from awac_robot.export import ExportError

    if args.eval_episodes < 0:
        raise UserError(f"--eval-episodes must be >= 0, got {args.eval_episodes}")
    try:
        report = import_dapg_policy(args.weights, args.task, args.out, args.verify, args.eval_episodes)
    except (PolicyImportError, ExportError) as exc:
        raise UserError(str(exc)) from None
    export = report.export
    print(
        f"wrote {export.onnx_path} and its card {export.card_path}: onnxruntime matches the numpy forward pass "
        f"within {export.max_abs_diff:.1e} on {export.verified_on} observations from {export.obs_source}"
    )
    if report.success_rate is not None:
        print(f"deterministic success {report.success_rate:.0%} over {report.eval_episodes} evaluation episodes")
    print(f"collect with it: awac-robot collect --task {args.task} --demonstrator policy:{export.onnx_path}")
    return 0
