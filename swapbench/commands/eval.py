"""``swapbench eval``: measure a swapped model against its base; writes ``eval/results.json`` and the report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from swapbench.assets import asset_names
from swapbench.errors import UserError
from swapbench.weights_formats import format_names

if TYPE_CHECKING:
    from swapbench.config import Config
    from swapbench.eval.evaluate import Target
    from swapbench.eval.rows import PromptItem
    from swapbench.rundir import RunDir


def register(sub: argparse._SubParsersAction) -> None:
    from swapbench.commands.common import add_config_arguments

    p = sub.add_parser("eval", help="measure edit success, preservation and drift vs base; writes eval/",
                       description="Sample the base and tuned models with the same seeds, judge every image "
                       "zero-shot, and write results.json + report.html. Suites are templates over the edits "
                       "of the run (edits, or data.swap_pairs, in its config.json): a run trained with "
                       "--set 'edits=[{erase: lion}, {remap: horse, to: cow}]' is scored as erase_success/lion "
                       "and remap_success/horse->cow, with controls and neighbours that leave the edited concepts "
                       "out. For a bare pipeline folder or --model base, pass the edits the same way (default: "
                       "the swap giraffe <-> zebra).")
    p.add_argument("target", nargs="?", help="run directory, a folder of runs (its latest finished run is "
                   "evaluated), or a diffusers pipeline folder (then pass --base); default: the latest finished "
                   "run under --runs")
    p.add_argument("--base", help="base pipeline folder or spec (default: the run's model.pretrained; without a run, "
                   "the preset's)")
    p.add_argument("--weights", metavar="FILE_OR_FOLDER", help="score an edited model made elsewhere: the base "
                   "pipeline with this file's weights applied (partial or full denoiser state dicts, text-encoder "
                   "checkpoints, diffusers or kohya LoRA, Concept Ablation deltas, CompVis checkpoints, pipeline "
                   "folders; the README's format table); .pt/.bin/.ckpt are read weights-only. Instead of TARGET")
    p.add_argument("--weights-format", default="auto", choices=["auto", *format_names()],
                   help="the format of --weights (default: detected from its key names)")
    p.add_argument("--model", choices=["base"], help="evaluate the base model against itself (a sanity check)")
    p.add_argument("--suite", default=None, help=f"suite name ({', '.join(asset_names('eval/suites'))}) or a "
                   "suite YAML path (gate: sized for `swapbench gate`, docs/ci.md)")
    p.add_argument("--prompts", metavar="FILE.jsonl|FILE.csv", help="extra prompts, scored as the group custom: "
                   "JSONL, one {\"prompt\", \"concept\"} per line, or a CSV prompt file in ESD/UCE's layout "
                   "(columns prompt, evaluation_seed or seed, class, concept, type or categories, case_number; "
                   "others ignored); a CSV row's own seed is used, and eval.seeds does not change it")
    p.add_argument("--prompt-concepts", metavar="NAME=LABEL,...", help="map the prompt file's concept names to the "
                   "judge's labels, e.g. 'church=building,french horn=horn'")
    p.add_argument("--out", help="output folder (default: RUN/eval)")
    p.add_argument("--runs", default="runs", help="where to look for the latest run (default: runs)")
    p.add_argument("--json", action="store_true", help="print the metrics of results.json as JSON instead of "
                   "the table; stdout then holds only that JSON (the report path goes to stderr)")
    p.add_argument("--all", action="store_true", help="print every metric (default: the headline metrics, the gate "
                   "verdict and what moved from the base)")
    add_config_arguments(p, default_preset=None)
    p.set_defaults(func=run)


def _find_run(args: argparse.Namespace) -> RunDir | None:
    """The run directory the command names, or None for a bare pipeline folder or ``--model base``.

    TARGET may be a run, a pipeline folder, or a folder of runs (``runs/``: its latest finished run
    is evaluated); without TARGET the latest finished run under ``--runs``.
    """
    from swapbench.rundir import RunDir, latest_run, looks_like_runs_root

    if args.weights:
        if args.target or args.model:
            raise UserError("--weights is the model to evaluate: pass it instead of TARGET and --model")
        return None
    if args.model == "base":
        return None
    if args.target is None:
        return latest_run(args.runs)
    path = Path(args.target)
    if not path.exists():
        raise UserError(f"{path} does not exist; pass a run directory, a folder of runs or a diffusers pipeline folder")
    if (path / "config.json").is_file() and not (path / "model_index.json").is_file():
        return RunDir(path)
    if looks_like_runs_root(path):
        run = latest_run(path)
        print(f"swapbench eval: {path} holds runs; evaluating the latest finished one, {run.root}", file=sys.stderr)
        return run
    return None


def _target(args: argparse.Namespace, cfg: Config, run: RunDir | None) -> Target:
    from swapbench.eval.evaluate import Target
    from swapbench.loading import resolve_model

    base = args.base or cfg.model.pretrained
    if args.model == "base":
        return Target(resolve_model(base), resolve_model(base), "base")
    if args.weights:
        return Target(str(args.weights), resolve_model(base), Path(args.weights).stem)
    if run is None:
        return Target(resolve_model(args.target), resolve_model(base), Path(args.target).name)
    if not (run.model / "model_index.json").is_file():
        raise UserError(f"run {run.root} has no exported model (no model/model_index.json); finish it with "
                        f"`swapbench train --resume {run.root}`")
    return Target(resolve_model(str(run.model)), resolve_model(base), run.name, run.root)


def _custom_items(args: argparse.Namespace, cfg: Config, labels: list[str]) -> list[PromptItem]:
    """The ``--prompts`` file's items (group ``custom``), its concepts mapped by ``--prompt-concepts``."""
    from swapbench.eval.prompt_files import custom_items, parse_concept_map

    if not args.prompts:
        if args.prompt_concepts:
            raise UserError("--prompt-concepts maps the concepts of a --prompts file; pass the file with --prompts")
        return []
    prompts = custom_items(args.prompts, labels, cfg.eval.seeds or 8, parse_concept_map(args.prompt_concepts, labels))
    if prompts.seed_column and cfg.eval.seeds:
        print(f"swapbench eval: {args.prompts} draws each row with its own seed (column {prompts.seed_column}); "
              f"eval.seeds={cfg.eval.seeds} sizes the suite's prompts only", file=sys.stderr)
    return prompts.items


def run(args: argparse.Namespace) -> int:
    import torch

    from swapbench.config import (
        apply_mapping,
        config_from_dict,
        load_config,
        parse_override,
        read_config_file,
        set_key,
    )
    from swapbench.io import read_json

    overrides = list(args.overrides) + [f"{k}={v}" for k, v in (("seed", args.seed), ("device", args.device))
                                        if v is not None]
    run = _find_run(args)
    if run is not None and not args.preset and run.config.is_file():
        cfg = config_from_dict(read_json(run.config))
        if args.config:
            apply_mapping(cfg, read_config_file(Path(args.config)), source=args.config)
        for item in overrides:
            set_key(cfg, *parse_override(item), source="--set")
    else:
        cfg = load_config(args.preset or "savanna", args.config, overrides)
    if args.suite:
        cfg.eval.suite = args.suite

    from swapbench.eval.evaluate import evaluate
    from swapbench.eval.judge import load_judges
    from swapbench.eval.suite import load_suite
    from swapbench.reports.summary import print_summary

    suite = load_suite(cfg.eval.suite, cfg.eval.seeds, cfg.edit_set)
    items = list(suite.items) + _custom_items(args, cfg, suite.labels)
    target = _target(args, cfg, run)
    tuned_pipe = None
    if args.weights:
        from swapbench.eval.evaluate import base_spec
        from swapbench.weights_formats import load_edited

        # Applied before anything is sampled, so a file that does not fit the base fails in seconds.
        tuned_pipe, target.weights = load_edited(base_spec(target.base, cfg), args.weights, args.weights_format)
    out_dir = Path(args.out) if args.out else (run.eval_dir if run else Path("runs") / f"eval-{target.name}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write the evaluation to {out_dir} ({e.strerror}); pass a writable --out") from None
    torch.manual_seed(cfg.seed)
    from accelerate import PartialState

    from swapbench.devices import is_cpu, resolve_device

    # Joins the process group under accelerate launch / torchrun (sampling is split); a no-op otherwise.
    state = PartialState(cpu=is_cpu(cfg.device))
    device = state.device if state.num_processes > 1 else resolve_device(cfg.device)
    judge, others = load_judges(cfg.eval, suite.labels, suite.judge_templates, device, suite.nothing)
    results = evaluate(cfg, target, suite, items, judge, out_dir, device, tuned_pipe, others=others)
    if results is None:
        return 0
    from swapbench.reports.html import write_report

    report = write_report(out_dir, run.root if run else None)
    if run is not None and not args.out:
        # The run's own evaluation (not one written elsewhere) goes into its model card's model-index.
        from swapbench.train.model_card import add_eval_results

        add_eval_results(run.model, results)
    from swapbench.catalog import validity_warnings

    for warning in validity_warnings(results):
        print(f"swapbench eval: warning: {warning}", file=sys.stderr)
    if args.json:
        # stdout holds the JSON alone, so `swapbench eval --json | jq` works; the report path is a note.
        print(json.dumps(results["metrics"], indent=2))
        print(f"report: {report}", file=sys.stderr)
    else:
        print_summary(results, show_all=args.all)
        print(report)
    return 0
