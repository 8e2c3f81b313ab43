"""The hkd command line: every workflow step is a subcommand, usable without Snakemake.

This module only dispatches. Each command is defined in a module of :mod:`hkd.commands` (its
``parser_<name>`` and ``cmd_<name>``), and ``hkd COMMAND`` imports that module alone, so a job runs
the code of its own command and of no other (``hkd/workflow_deps.py`` reads ``COMMANDS``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from hkd.commands.args import is_inline_json
from hkd.errors import DataError

#: Command -> the module that defines it, in the order of ``hkd --help``.
COMMANDS = {
    "phantom": "hkd.commands.data",
    "download": "hkd.commands.data",
    "extract": "hkd.commands.data",
    "split": "hkd.commands.data",
    "prepare": "hkd.commands.data",
    "describe-data": "hkd.commands.data",
    "train": "hkd.commands.train",
    "train-cohort": "hkd.commands.train",
    "teacher-cache": "hkd.commands.train",
    "evaluate": "hkd.commands.evaluate",
    "tables": "hkd.commands.evaluate",
    "hypotheses": "hkd.commands.evaluate",
    "context": "hkd.commands.report",
    "figures": "hkd.commands.report",
    "overview": "hkd.commands.report",
    "features": "hkd.commands.models",
    "predict": "hkd.commands.deploy",
    "export": "hkd.commands.deploy",
    "cost": "hkd.commands.deploy",
}


def build_parser(commands=None) -> argparse.ArgumentParser:
    """The parser of ``commands`` (default: all of them)."""
    parser = argparse.ArgumentParser(
        prog="hkd", description="Heterogeneous knowledge distillation study: every workflow step is a subcommand, "
        "usable without Snakemake. 'hkd COMMAND --help' lists a command's options.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in commands or COMMANDS:
        getattr(importlib.import_module(COMMANDS[name]), "parser_" + name.replace("-", "_"))(sub)
    for action in sub._choices_actions:  # 'hkd COMMAND --help' opens with the command's one-line help
        sub.choices[action.dest].description = action.help
    return parser


def _command(argv: list[str]) -> str | None:
    """The command named on the command line (the first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _paths(args, names: tuple[str, ...]) -> dict[str, str]:
    """The paths named by the arguments ``names`` of ``args``, keyed by their flag (lists are expanded)."""
    out = {}
    for name in names:
        flag = "--" + name.replace("_", "-")
        value = getattr(args, name, None)
        values = value if isinstance(value, list) else [value]
        for i, v in enumerate(values):
            if v is None or (isinstance(v, str) and is_inline_json(v)):
                continue
            if name in ("models", "logs"):  # NAME=PATH
                v = str(v).split("=", 1)[-1]
            out[flag if len(values) == 1 else f"{flag}[{i}]"] = v
    return out


def _check_numbers(args) -> None:
    """The counts a command declares (``minimums``: argument -> least value) are whole numbers at least that;
    ``--threads`` above this machine's CPUs is capped, said in one line. Checked before any work."""
    for name, least in getattr(args, "minimums", {}).items():
        value = getattr(args, name, None)
        if value is not None and value < least:
            flag = "--" + name.replace("_", "-")
            raise DataError(f"{flag} {value}: must be at least {least} (nothing was written)")
    cpus = os.cpu_count() or 1
    if getattr(args, "threads", None) and args.threads > cpus:
        logging.getLogger("hkd").warning("--threads %d: this machine has %d CPU(s); using %d", args.threads, cpus, cpus)
        args.threads = cpus


def _one_line(exc: BaseException) -> str:
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    return " ".join(str(msg).split())


def main(argv: list[str] | None = None) -> int:
    from hkd import record
    from hkd.guard import check_outputs_spare_inputs
    from hkd.lock import LockError

    argv = sys.argv[1:] if argv is None else list(argv)
    name = _command(argv)
    args = build_parser([name] if name in COMMANDS else None).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    record.set_writer(f"hkd {args.command}")  # what this process writes is recorded as this command's
    try:
        _check_numbers(args)
        # what the command reads, by flag: its outputs are checked against them here, and a command that
        # derives more outputs (predict's case files) checks those against the same
        args.input_paths = _paths(args, getattr(args, "inputs", ()))
        check_outputs_spare_inputs(_paths(args, args.outputs), args.input_paths)
        args.func(args)
    except (DataError, ValueError, KeyError, OSError, ImportError, LockError) as exc:
        # Bad input (or a folder another run holds): one line that names the file, key or argument. Other
        # exceptions are bugs and keep their traceback.
        print(f"hkd {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hkd {args.command}: interrupted (nothing half-written was kept)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
