"""`python -m pipeline search | eval | doctor | queue | view`: argument parsing, exit codes and error reporting.

Each subcommand lives in its own module (search, doctor, queue, view) and declares its flags there; this module only
dispatches and turns exceptions into the exit codes of `exit_codes.py`.

Heavy imports (torch, diffusers, open_clip) happen inside the subcommands' run(), so `--help` and parameter
errors answer at once.
"""
from __future__ import annotations

import argparse
import re
import sys
import traceback
from typing import Optional, Sequence

from .. import __version__
from ..errors import Interrupted, InvalidParameter, PromptBeamError
from . import doctor, eval as evaluate, queue, search, view
from .exit_codes import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE

SUBCOMMANDS = (search, evaluate, doctor, queue, view)     # each: add_parser(commands, parents) and run(args) -> exit code


def error(message: str) -> None:
    """The one user-facing error line."""
    print(f"error: {message}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Prompt Beam: beam search over LLM-written prompts, rendered with Flux and scored by CLIP "
                    "alignment + a LAION aesthetic predictor.")
    parser.add_argument("--version", action="version", version=f"Prompt Beam {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true",
                        help="show full tracebacks and debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        sub = module.add_parser(commands, parents=[common])
        sub.set_defaults(handler=module.run, flag_names=_flag_names(sub))
    return parser


def _flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """dest -> the flag a user types (`keep_top` -> `--keep-top`, `prompt` -> `PROMPT`)."""
    names = {}
    for action in parser._actions:       # argparse offers no public accessor for declared arguments
        if action.dest in ("help", argparse.SUPPRESS):
            continue
        long_flags = [o for o in action.option_strings if o.startswith("--")]
        names[action.dest] = long_flags[0] if long_flags else (action.metavar or action.dest.upper())
    return names


def describe_invalid(exc: InvalidParameter, flag_names: dict[str, str]) -> str:
    """Name the parameter as the user typed it: BeamConfig says `keep_top`, the user typed `--keep-top`.

    Field names with an underscore are unambiguous, so they are translated inside the message too
    ("must be <= beam_width" -> "must be <= --beam-width")."""
    message = InvalidParameter.bare(exc)
    for field, flag in flag_names.items():
        if "_" in field and not flag.isupper():
            message = re.sub(rf"(?<![\w-]){re.escape(field)}(?!\w)", flag, message)
    return f"{flag_names.get(exc.name, exc.name)}: {message}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)           # usage errors exit 2 here, with argparse's own message
    debug = bool(getattr(args, "debug", False))
    import logging
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    else:       # what the pack logs (e.g. a report.html it could not write): one "warning:" line each
        logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except InvalidParameter as exc:
        if debug:
            traceback.print_exc()
        error(describe_invalid(exc, args.flag_names))
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (`... | head`): not an error worth a message. Point stdout at devnull so the
        # interpreter's final flush does not raise again.
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except (Interrupted, KeyboardInterrupt) as exc:
        if debug:
            traceback.print_exc()
        error(f"interrupted{': ' + str(exc) if str(exc) else ''}")
        return EXIT_INTERRUPTED
    except PromptBeamError as exc:
        if debug:
            traceback.print_exc()
        error(_one_line(str(exc)) or type(exc).__name__)
        return EXIT_FAILURE
    except Exception as exc:                 # a bug, not a user error: say so, and how to see more
        if debug:
            traceback.print_exc()
        error(f"internal: {type(exc).__name__}: {_one_line(str(exc))}"
              + ("" if debug else " (rerun with --debug for the traceback)"))
        return EXIT_FAILURE


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
