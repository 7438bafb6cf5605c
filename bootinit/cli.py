"""The ``bootinit`` command line (also ``python -m bootinit``).

Shaped like iscsi-ls / iscsiadm: ``bootinit [options] COMMAND [options] ...``. Options are
accepted before or after the command. Failures print one line, ``bootinit: <what failed>``,
and exit non-zero; a Python traceback only with ``-v``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from bootinit import boot, commands, dump, lab
from firmware_tables import cli as ibft_cli

#: Subcommand modules: each has ``add_parser(subparsers, common)``.
Handler = Callable[[argparse.Namespace], int]


def common_options() -> argparse.ArgumentParser:
    """Options every command takes (before or after the command name)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                   help="more output; tracebacks on errors")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="machine-readable output")
    return p


def build_parser() -> argparse.ArgumentParser:
    """The whole parser tree."""
    common = common_options()
    net = commands.net_options()
    parser = argparse.ArgumentParser(
        prog="bootinit", parents=[common, net],
        description="A boot-style iSCSI initiator with its own TCP/IP stack over TAP.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    commands.add_parsers(sub, common)
    ibft_cli.add_parser(sub)
    lab.add_lab_parser(sub)
    boot.add_parsers(sub)
    dump.add_parser(sub)
    for action in sub.choices.values():
        # let every subcommand take the common options too
        for a in common._actions:
            if not any(set(a.option_strings) & set(b.option_strings)
                       for b in action._actions):
                action._add_action(a)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", 0) or 0
    args.verbose = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.ERROR,
        format="bootinit: %(name)s: %(message)s")
    if not verbose:
        logging.disable(logging.CRITICAL)  # failures are reported once, below
    if not hasattr(args, "json"):
        args.json = False
    func: Handler | None = getattr(args, "func", None)
    if func is None:
        parser.print_usage(sys.stderr)
        return 2
    try:
        return func(args)
    except KeyboardInterrupt:
        print("bootinit: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one clear line unless -v
        if verbose:
            raise
        print(f"bootinit: {e}", file=sys.stderr)
        return 1


def run() -> None:
    """Console-script entry."""
    sys.exit(main())


if __name__ == "__main__":
    run()
