"""The `awac-robot` command: argument parsing and printing only; the work lives in the stages.

Each subcommand group is a module here with `register(subparsers)`; a handler returns the
process exit code. Errors the user can fix (a wrong task name, a foreign store) are
printed as one line on stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from awac_robot import __version__
from awac_robot.cli import check_robot, collect, demo, demos, deploy, import_policy, tasks, train, view
from awac_robot.cli.errors import UserError
from awac_robot.provenance import cli_command

COMMAND_MODULES = (tasks, collect, demos, import_policy, demo, train, deploy, check_robot, view)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="awac-robot",
        description=(
            "Learn manipulation skills from demonstrations and improve them online with AWAC "
            "(Nair et al. 2020), then export them to ONNX and run them behind a real-time safety layer."
        ),
        epilog="Pipeline: collect -> finetune -> export -> deploy. Run 'awac-robot COMMAND --help' for details.",
    )
    parser.add_argument("--version", action="version", version=f"awac-robot {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(arguments)
    try:
        with cli_command(arguments):  # the provenance of what this command writes into a store
            return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if _is_user_error(exc):
            print(f"awac-robot {args.command}: error: {exc}", file=sys.stderr)
            return 2
        raise


def _is_user_error(exc: Exception) -> bool:
    from awac_robot.envs import TaskError
    from awac_robot.gl import RenderError
    from awac_robot.outputs import OutputError
    from awac_robot.rollout import SeedError
    from awac_robot.spec import SpecMismatch

    return isinstance(exc, (UserError, TaskError, SpecMismatch, RenderError, SeedError, OutputError, FileNotFoundError))
