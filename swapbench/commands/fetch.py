"""``swapbench fetch``: download what a preset needs into the standard caches, or check offline that it is there."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    from swapbench.commands.common import add_config_arguments

    p = sub.add_parser("fetch",
                       help="download (or --check) the pipeline, dataset, judges and Inception weights a preset needs",
                       description="Fill the standard caches (Hugging Face hub cache, datasets cache, TORCH_HOME) with "
                       "everything `swapbench train` and `swapbench eval` read for a preset and its overrides: the "
                       "base pipeline (model.pretrained, model.revision, model.variant), the dataset (data.source), "
                       "the judges (eval.judge, eval.judges; a torchvision classifier's weights go to TORCH_HOME) "
                       "and, with eval.fid_features=inception, torch-fidelity's Inception weights. Run it where "
                       "there is network; --check runs offline, prints one row per artifact and exits 2 naming "
                       "what is missing.")
    add_config_arguments(p)
    p.add_argument("--suite", help="evaluation suite (eval.suite) the evaluation will run")
    p.add_argument("--data", metavar="PATH_OR_NAME", help="dataset (data.source), as for train")
    p.add_argument("--model", metavar="PATH_OR_NAME", help="base pipeline (model.pretrained), as for train")
    p.add_argument("--check", action="store_true", help="only look (offline); exit 2 if anything is missing")
    p.add_argument("--json", action="store_true", help="print the rows as JSON on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from swapbench import artifacts
    from swapbench.config import load_config
    from swapbench.errors import UserError

    overrides = list(args.overrides) + [f"{k}={v}" for k, v in (("seed", args.seed), ("device", args.device),
                                                                 ("data.source", args.data),
                                                                 ("model.pretrained", args.model),
                                                                 ("eval.suite", args.suite)) if v is not None]
    cfg = load_config(args.preset, args.config, overrides)
    if args.suite:
        from swapbench.eval.suite import load_suite

        load_suite(cfg.eval.suite, None, cfg.edit_set)  # a bad suite name fails here, not after a download
    from swapbench.train.methods import get_method

    wanted = artifacts.needed(cfg, reads_data=get_method(cfg.train.method).reads_data(cfg))
    statuses = [artifacts.check(a, cfg) if args.check else artifacts.fetch(a, cfg) for a in wanted]
    _print(statuses, args.json)
    missing = [s for s in statuses if not s.present]
    if missing:
        raise UserError(artifacts.missing_message(missing, cfg.preset) if args.check else
                        "still missing after fetching: " + ", ".join(f"{s.artifact.kind} {s.artifact.name}"
                                                                     for s in missing))
    return 0


def _print(statuses: list, as_json: bool) -> None:
    from swapbench.artifacts import human

    if as_json:
        print(json.dumps([{"kind": s.artifact.kind, "name": s.artifact.name, "key": s.artifact.key,
                           "needed_by": list(s.artifact.needed_by), "present": s.present, "where": s.where,
                           "size": s.size, "missing": s.missing} for s in statuses], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="artifacts", title_justify="left")
    for column in ("artifact", "name", "status", "where", "size", "needed by"):
        table.add_column(column, overflow="fold")
    for s in statuses:
        state = ("[green]present[/]" if s.present else
                 "[red]missing[/]" + (f" ({', '.join(s.missing)})" if s.missing else ""))
        table.add_row(s.artifact.kind, s.artifact.name, state, s.where, human(s.size), "+".join(s.artifact.needed_by))
    Console().print(table)
