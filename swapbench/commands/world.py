"""``swapbench world``: build, inspect and materialise the embedded worlds (savanna, savanna-flow)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from swapbench.errors import UserError
from swapbench.loading import WORLDS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("world", help="build, inspect or export the embedded worlds",
                       description="The offline savanna worlds: a COCO-format dataset generator, an open_clip "
                       "judge and two tiny pipelines trained on that data: savanna (Stable Diffusion 1.x layout) and "
                       "savanna-flow (Stable Diffusion 3 layout, flow matching, savanna's VAE and judge).")
    world_sub = p.add_subparsers(dest="world_command", metavar="ACTION", required=True)

    b = world_sub.add_parser("build", help="rebuild a world from its seed (savanna: about 50 min on 2 cores; "
                             "savanna-flow, from the savanna world in use: about 16 min)")
    b.add_argument("--world", choices=tuple(WORLDS), default="savanna", help="which world (default: savanna)")
    b.add_argument("--out", default=None, help="output folder (default: ./<world>-world)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--mini", action="store_true", help="a few images and steps: checks the code path in seconds")
    b.set_defaults(func=_build)

    i = world_sub.add_parser("info", help="paths, concepts, sampler settings and the quality card")
    i.add_argument("--world", choices=tuple(WORLDS), default="savanna", help="which world (default: savanna)")
    i.add_argument("--json", action="store_true", help="print machine-readable JSON")
    i.set_defaults(func=_info)

    d = world_sub.add_parser("data", help="write the world's dataset in COCO 2017 captions format")
    d.add_argument("--out", default=None, help="dataset root (default: a cache folder keyed by seed and version)")
    d.add_argument("--train", type=int, default=25_000, help="train images (default 25000)")
    d.add_argument("--val", type=int, default=2_500, help="val images (default 2500)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_data)


def _build(args: argparse.Namespace) -> int:
    from swapbench.commands.world_build import BuildSettings, FlowBuildSettings, build_flow_world, build_world

    settings_class, build = (FlowBuildSettings, build_flow_world) if args.world == "savanna-flow" else (
        BuildSettings, build_world)
    settings = settings_class.mini() if args.mini else settings_class()
    settings.seed = args.seed
    out = Path(args.out or f"{args.world}-world")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out.parent} ({e.strerror}); pass a writable --out") from None
    manifest = build(out, settings)
    q = manifest["quality"]
    print(f"world built in {manifest['build_seconds']:.0f} s: {out.resolve()}")
    print("base fidelity: " + ", ".join(f"{k} {v:.2f}" for k, v in q["base_fidelity"].items()))
    return 0


def _info(args: argparse.Namespace) -> int:
    from swapbench.loading import WORLD_PREFIX, manifest, resolve_world, world_dir

    root = world_dir(args.world)
    m = manifest(root)
    judge = Path(resolve_world(WORLD_PREFIX + args.world, "judge"))
    info = {
        "dir": str(root),
        "pipeline": str(root / "pipeline"),
        "judge": str(judge),
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
    console.print(f"[bold]{args.world} world[/] {root}  (generator v{m['generator_version']}, seed {m['seed']}, "
                  f"built {m['built']})")
    shared = f"  ({m['judge']['from']}'s)" if "judge" in m else ""
    console.print(f"pipeline: {info['pipeline']}\njudge:    {info['judge']}{shared}")
    console.print("sampler:  " + ", ".join(f"{k}={v}" for k, v in m["sampler"].items())
                  + (f", max_sequence_length={m['max_sequence_length']}" if "max_sequence_length" in m else ""))
    q = m["quality"]
    # A world judged by another's judge has no judge checks of its own (they are that world's).
    columns = {"judge acc (clean)": "judge_accuracy_clean", "judge acc (VAE recon)": "judge_accuracy_reconstructed",
               "base fidelity": "base_fidelity"}
    columns = {title: key for title, key in columns.items() if key in q}
    table = Table(title="quality card")
    for col in ("concept", "role", *columns):
        table.add_column(col, justify="right" if col not in ("concept", "role") else "left")
    roles = {c: role for role, cs in m["concepts"].items() for c in cs}
    for c in q["base_fidelity"]:
        table.add_row(c, roles.get(c, ""), *(f"{q[key][c]:.3f}" for key in columns.values()))
    console.print(table)
    checks = f"{q['judge_check_n_per_concept']} held-out images / " if "judge_check_n_per_concept" in q else ""
    console.print(f"n = {checks}{q['base_fidelity_n_per_concept']} samples per concept; sampling "
                  f"{q['sampling_images_per_s']:.1f} images/s (batch {q['sampling_batch']})")
    return 0


def _data(args: argparse.Namespace) -> int:
    from swapbench.world.data import materialise

    root = materialise(seed=args.seed, train=args.train, val=args.val, out=args.out)
    print(root)
    return 0
