"""``swapbench world``: build, inspect and materialise the embedded savanna world."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from swapbench.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("world", help="build, inspect or export the embedded savanna world",
                       description="The offline savanna world: a COCO-format dataset generator, a tiny Stable "
                       "Diffusion pipeline and an open_clip judge trained on it.")
    world_sub = p.add_subparsers(dest="world_command", metavar="ACTION", required=True)

    b = world_sub.add_parser("build", help="rebuild the world from its seed (about 30 min on 2 cores)")
    b.add_argument("--out", default="savanna-world", help="output folder (default: ./savanna-world)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--mini", action="store_true", help="a few images and steps: checks the code path in seconds")
    b.set_defaults(func=_build)

    i = world_sub.add_parser("info", help="paths, concepts, sampler settings and the quality card")
    i.add_argument("--json", action="store_true", help="print machine-readable JSON")
    i.set_defaults(func=_info)

    d = world_sub.add_parser("data", help="write the world's dataset in COCO 2017 captions format")
    d.add_argument("--out", default=None, help="dataset root (default: a cache folder keyed by seed and version)")
    d.add_argument("--train", type=int, default=25_000, help="train images (default 25000)")
    d.add_argument("--val", type=int, default=2_500, help="val images (default 2500)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_data)


def _build(args: argparse.Namespace) -> int:
    from swapbench.commands.world_build import BuildSettings, build_world

    settings = BuildSettings.mini() if args.mini else BuildSettings()
    settings.seed = args.seed
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out.parent} ({e.strerror}); pass a writable --out") from None
    manifest = build_world(out, settings)
    q = manifest["quality"]
    print(f"world built in {manifest['build_seconds']:.0f} s: {out.resolve()}")
    print("base fidelity: " + ", ".join(f"{k} {v:.2f}" for k, v in q["base_fidelity"].items()))
    return 0


def _info(args: argparse.Namespace) -> int:
    from swapbench.world import manifest, world_dir

    root = world_dir()
    m = manifest(root)
    info = {
        "dir": str(root),
        "pipeline": str(root / "pipeline"),
        "judge": str(root / "judge"),
        "concepts": m["concepts"],
        "sampler": m["sampler"],
        "quality": m["quality"],
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]savanna world[/] {root}  (generator v{m['generator_version']}, seed {m['seed']}, "
                  f"built {m['built']})")
    console.print(f"pipeline: {info['pipeline']}\njudge:    {info['judge']}")
    console.print("sampler:  " + ", ".join(f"{k}={v}" for k, v in m["sampler"].items()))
    q = m["quality"]
    table = Table(title="quality card")
    for col in ("concept", "role", "judge acc (clean)", "judge acc (VAE recon)", "base fidelity"):
        table.add_column(col, justify="right" if col not in ("concept", "role") else "left")
    roles = {c: role for role, cs in m["concepts"].items() for c in cs}
    for c in q["base_fidelity"]:
        table.add_row(c, roles.get(c, ""), f"{q['judge_accuracy_clean'][c]:.3f}",
                      f"{q['judge_accuracy_reconstructed'][c]:.3f}", f"{q['base_fidelity'][c]:.3f}")
    console.print(table)
    console.print(f"n = {q['judge_check_n_per_concept']} held-out images / {q['base_fidelity_n_per_concept']} samples "
                  f"per concept; sampling {q['sampling_images_per_s']:.1f} images/s (batch {q['sampling_batch']})")
    return 0


def _data(args: argparse.Namespace) -> int:
    from swapbench.world.data import materialise

    root = materialise(seed=args.seed, train=args.train, val=args.val, out=args.out)
    print(root)
    return 0
