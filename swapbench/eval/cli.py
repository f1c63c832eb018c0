"""``swapbench eval``: measure a swapped model against its base (DESIGN §5-6)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from swapbench.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    from swapbench.train.cli import add_config_arguments

    p = sub.add_parser("eval", help="measure swap success, preservation and drift vs base; writes eval/",
                       description="Sample the base and tuned models with the same seeds, judge every image "
                       "zero-shot, and write results.json + report.html.")
    p.add_argument("target", nargs="?", help="run directory (default: the latest finished run under runs/) "
                   "or a diffusers pipeline folder (then pass --base)")
    p.add_argument("--base", help="base pipeline folder or spec (default: the run's model.pretrained)")
    p.add_argument("--model", choices=["base"], help="evaluate the base model against itself (a sanity check)")
    p.add_argument("--suite", default=None, help="suite name (quick, default, full) or a suite YAML path")
    p.add_argument("--prompts", metavar="FILE.jsonl", help="extra prompts, one {\"prompt\", \"concept\"} per line")
    p.add_argument("--out", help="output folder (default: RUN/eval)")
    p.add_argument("--runs", default="runs", help="where to look for the latest run (default: runs)")
    p.add_argument("--json", action="store_true", help="print results.json instead of the table")
    add_config_arguments(p, default_preset=None)
    p.set_defaults(func=run)


def _target(args, cfg):
    from swapbench.eval.evaluate import Target
    from swapbench.rundir import RunDir, latest_run
    from swapbench.train.model import resolve_model

    base = args.base or cfg.model.pretrained
    if args.model == "base":
        return Target(resolve_model(base), resolve_model(base), "base"), None
    if args.target is None:
        run = latest_run(args.runs)
    else:
        path = Path(args.target)
        if not path.exists():
            raise UserError(f"{path} does not exist; pass a run directory or a diffusers pipeline folder")
        run = RunDir(path) if (path / "config.json").is_file() and not (path / "model_index.json").is_file() else None
        if run is None:
            return Target(resolve_model(str(path)), resolve_model(base), path.name), None
    if not (run.model / "model_index.json").is_file():
        raise UserError(f"run {run.root} has no exported model (no model/model_index.json); finish it with "
                        f"`swapbench train --resume {run.root}`")
    return Target(resolve_model(str(run.model)), resolve_model(base), run.name, run.root), run


def run(args: argparse.Namespace) -> int:
    import torch

    from swapbench.config import config_from_dict, load_config
    from swapbench.io import read_json
    from swapbench.rundir import RunDir, latest_run

    overrides = list(args.overrides) + [f"{k}={v}" for k, v in (("seed", args.seed), ("device", args.device)) if v is not None]
    run_config = None
    if not args.model and not args.preset:
        candidate = Path(args.target) if args.target else None
        if candidate is None:
            try:
                candidate = latest_run(args.runs).root
            except UserError:
                candidate = None
        if candidate is not None and RunDir(candidate).config.is_file():
            run_config = config_from_dict(read_json(RunDir(candidate).config))
    if run_config is not None:
        cfg = run_config
        from swapbench.config import apply_mapping, parse_override, read_config_file, set_key

        if args.config:
            apply_mapping(cfg, read_config_file(Path(args.config)), source=args.config)
        for item in overrides:
            set_key(cfg, *parse_override(item), source="--set")
    else:
        cfg = load_config(args.preset or "savanna", args.config, overrides)
    if args.suite:
        cfg.eval.suite = args.suite

    from swapbench.eval.evaluate import evaluate
    from swapbench.eval.judge import ZeroShotJudge
    from swapbench.eval.suite import custom_items, load_suite
    from swapbench.eval.summary import print_summary

    suite = load_suite(cfg.eval.suite, cfg.eval.seeds)
    items = list(suite.items)
    if args.prompts:
        items += custom_items(args.prompts, suite, cfg.eval.seeds or 8)
    target, run = _target(args, cfg)
    out_dir = Path(args.out) if args.out else (run.eval_dir if run else Path("runs") / f"eval-{target.name}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write the evaluation to {out_dir} ({e.strerror}); pass a writable --out") from None
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    judge = ZeroShotJudge.load(cfg.eval.judge, suite.labels, suite.judge_templates, device)
    results = evaluate(cfg, target, suite, items, judge, out_dir, device)
    if args.json:
        print(json.dumps(results["metrics"], indent=2))
    else:
        print_summary(results)
    from swapbench.reports.html import write_report

    report = write_report(out_dir, run.root if run else None)
    print(report)
    return 0
