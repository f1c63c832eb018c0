"""``swapbench`` command line: one small module per subcommand, each exposing ``register``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from swapbench import __version__
from swapbench.errors import GateFailure, UserError

# Subcommand modules, imported lazily so `swapbench --help` stays fast.
COMMANDS = {
    "train": "swapbench.commands.train",
    "eval": "swapbench.commands.eval",
    "compare": "swapbench.commands.compare",
    "gate": "swapbench.commands.gate",
    "power": "swapbench.commands.power",
    "sweep": "swapbench.commands.sweep",
    "world": "swapbench.commands.world",
    "fetch": "swapbench.commands.fetch",
}


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="swapbench",
        description="Fine-tune a text-to-image diffusion model to swap two concepts, and measure the swap "
        "and everything else it changed.",
        epilog="Start with: swapbench train && swapbench eval",
    )
    parser.add_argument("--version", action="version", version=f"swapbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        try:
            importlib.import_module(module).register(sub)
        except Exception as e:  # a broken command must not take the others (or --help) down with it
            _register_unloadable(sub, name, e)
    return parser


def _register_unloadable(sub: argparse._SubParsersAction, name: str, error: Exception) -> None:
    """``name`` still parses (whatever follows it) and, when run, says why its module did not load."""
    p = sub.add_parser(name, help=f"(cannot load: {type(error).__name__})", add_help=False, prefix_chars="\0")
    p.add_argument("rest", nargs="*")

    def run(args: argparse.Namespace) -> int:
        if args.verbose:
            raise error
        print(f"swapbench {name}: error: the command cannot load ({type(error).__name__}: {error}); "
              "reinstall swapbench or install the package it names (-v shows the traceback)", file=sys.stderr)
        return 1

    p.set_defaults(func=run)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _quiet_libraries(args.verbose)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that has gone away (`| head`) fails here, not at exit
        return code
    except BrokenPipeError:
        _discard_stdout()
        return 1
    except UserError as e:
        print(f"swapbench {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except GateFailure as e:
        if str(e):
            print(f"swapbench {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"swapbench {args.command}: interrupted", file=sys.stderr)
        return 130


def _discard_stdout() -> None:
    """The reader of stdout has gone: point the descriptor at /dev/null, so the interpreter's final flush
    does not print a BrokenPipeError traceback (the recipe of Python's signal docs, "Note on SIGPIPE")."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # a stdout without a descriptor (captured in tests) has nothing to flush
        pass


class _AskedForOffline(logging.Filter):
    """huggingface_hub warns "Could not reach the Hub (... offline mode is enabled ...)" whenever it resolves
    a cached repo under HF_HUB_OFFLINE: that is what the user asked for, not a failure to report."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Could not reach the Hub") and "offline mode is enabled" in message)


_ASKED_FOR_OFFLINE = _AskedForOffline()


def _quiet_libraries(verbose: bool) -> None:
    """Library chatter (deprecation notices, hub warnings) hides what a user needs to see."""
    if verbose:
        logging.basicConfig(level=logging.INFO)
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import warnings

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()

    from swapbench.loading import offline

    if offline():
        logging.getLogger("huggingface_hub.hf_api").addFilter(_ASKED_FOR_OFFLINE)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")


if __name__ == "__main__":
    sys.exit(main())
