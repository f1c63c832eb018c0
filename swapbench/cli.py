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
    for module in COMMANDS.values():
        try:
            importlib.import_module(module).register(sub)
        except ModuleNotFoundError as e:
            if not e.name or not e.name.startswith("swapbench"):
                raise
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _quiet_libraries(args.verbose)
    try:
        return int(args.func(args) or 0)
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

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")


if __name__ == "__main__":
    sys.exit(main())
