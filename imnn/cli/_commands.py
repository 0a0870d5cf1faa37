"""The table of commands, the parser it builds, and ``main``."""
from __future__ import annotations

import argparse
import os
import sys
from typing import NamedTuple

from . import _demo, _estimate, _fit, _info, _lfi
from ._errors import EXIT_ERROR, CommandError


class Command(NamedTuple):
    """One subcommand: its name and the module that defines it (``HELP``,
    ``add_arguments(parser)``, ``run(args) -> exit status``)."""
    name: str
    module: object


COMMANDS = (Command("demo", _demo), Command("fit", _fit), Command("estimate", _estimate),
            Command("info", _info), Command("lfi", _lfi))

DESCRIPTION = "Information maximising neural networks from the command line."


def parser() -> argparse.ArgumentParser:
    """The ``imnn`` argument parser, one subparser per entry of ``COMMANDS``."""
    from imnn import __version__
    top = argparse.ArgumentParser(prog="imnn", description=DESCRIPTION,
                                  epilog="The config reference: docs/guide/cli.md.")
    top.add_argument("--version", action="version", version=f"imnn {__version__}",
                     help="print the version and exit")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.module.HELP,
                           description=getattr(command.module, "DESCRIPTION",
                                               command.module.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        command.module.add_arguments(p)
        p.set_defaults(handler=command.module.run)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run the ``imnn`` command line.

    Args:
        argv: the arguments after ``imnn`` (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 done, 1 a failure while running, 2 a user's mistake,
        128 + N stopped by signal N.
    """
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except CommandError as error:
        message = " ".join(str(error).split("\n"))  # one line, whatever it wraps
        print(f"imnn {args.command}: error: {message}", file=sys.stderr)
        return error.code
    except OSError as error:  # a file system problem (permissions, a full disk): one line
        where = f" {error.filename}" if error.filename else ""
        print(f"imnn {args.command}: error:{where}: {error.strerror or error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"imnn {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `imnn info RUN | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
