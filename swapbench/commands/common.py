"""Arguments several subcommands share: how a config is chosen (preset, file, overrides, seed, device)."""

from __future__ import annotations

import argparse

from swapbench.config import preset_names


def add_config_arguments(p: argparse.ArgumentParser, default_preset: str | None = "savanna") -> None:
    p.add_argument("--preset", default=default_preset, help=f"recipe preset ({', '.join(preset_names())})")
    p.add_argument("--config", metavar="FILE", help="YAML/TOML/JSON config applied on top of the preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. --set train.lr=1e-4 (repeatable)")
    p.add_argument("--seed", type=int, help="random seed (config key seed)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
