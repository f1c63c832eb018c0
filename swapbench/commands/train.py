"""``swapbench train``: make the swapped model and write a run directory (``swapbench.rundir``)."""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from swapbench.commands.common import add_config_arguments
from swapbench.config import CHOICES, RESUMABLE, Config, load_config
from swapbench.errors import UserError

if TYPE_CHECKING:
    from accelerate import PartialState

    from swapbench.rundir import RunDir
    from swapbench.train.methods import Method
    from swapbench.train.recipe import SwapRecipe


def register(sub: argparse._SubParsersAction) -> None:
    from swapbench.config import TrainConfig
    from swapbench.train.methods import all_methods

    default = TrainConfig().method
    methods = ", ".join(f"{m.name} ({'default; ' if m.name == default else ''}{m.summary})" for m in all_methods())
    p = sub.add_parser("train", help="fine-tune the concept swap; writes runs/<name>/",
                       description="Make the swapped model and write a run directory. Methods (--method, "
                       f"train.method): {methods}. Training methods run the same "
                       "under `accelerate launch -m swapbench train ...` or `torchrun --nproc_per_node N "
                       "-m swapbench train ...`: train.batch_size is the global batch, split evenly over the "
                       "processes, so N processes train on the same samples as one.")
    add_config_arguments(p)
    p.add_argument("--data", metavar="PATH_OR_NAME", help="COCO root, save_to_disk folder, JSONL or hub dataset")
    p.add_argument("--model", metavar="PATH_OR_NAME", help="base diffusers pipeline folder or hub name")
    p.add_argument("--out", default=None, help="runs root folder (default: runs)")
    p.add_argument("--name", help="run name (default: <preset>-<timestamp>)")
    p.add_argument("--method", choices=CHOICES["train.method"],
                   help="how the swap is made (config key train.method; default from the preset: finetune)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted run from its last checkpoint; --set may change "
                   f"{', '.join(k + '*' if k.endswith('.') else k for k in RESUMABLE)} "
                   "(recorded in RUN_DIR/resumes.jsonl)")
    p.add_argument("--push-to-hub", metavar="REPO", help="also upload model/ to this hub repo")
    p.add_argument("--no-eval-check", action="store_true",
                   help="do not require the evaluation's judge (and Inception weights) here: train on a node "
                   "without them and evaluate elsewhere (needs train.eval_every=0)")
    p.set_defaults(func=run)


def _resumed_config(args: argparse.Namespace):
    from swapbench.config import apply_resume_overrides, config_from_dict
    from swapbench.io import read_json
    from swapbench.rundir import RunDir

    run_dir = RunDir(Path(args.resume))
    if not run_dir.config.is_file():
        raise UserError(f"{args.resume} is not a run directory (no config.json); pass the folder train created")
    fixed = [flag for flag, value in (("--preset", args.preset if args.preset != "savanna" else None),
                                      ("--config", args.config), ("--data", args.data), ("--model", args.model),
                                      ("--out", args.out), ("--name", args.name), ("--seed", args.seed))
             if value is not None]
    if fixed:
        raise UserError(f"{', '.join(fixed)} cannot be combined with --resume (the run keeps its own); "
                        "use --set for the resumable keys")
    cfg = config_from_dict(read_json(run_dir.config))
    overrides = list(args.overrides) + [f"{k}={v}" for k, v in (("device", args.device),
                                                                 ("export.push_to_hub", args.push_to_hub))
                                        if v is not None]
    changes = apply_resume_overrides(cfg, overrides)
    if run_dir.latest_checkpoint is not None:
        from swapbench.train.recipe import checkpoint_step

        checkpoint_step(run_dir.latest_checkpoint, cfg.train.max_steps)
    return cfg, run_dir, changes


def _preflight(cfg: Config, evaluate: bool) -> None:
    """What this run (and, with ``evaluate``, its evaluation) reads must be there before any work: a missing
    judge, or a suite whose labels lack an edited concept, would otherwise surface only after training."""
    from swapbench.artifacts import require
    from swapbench.train.methods import get_method

    if not evaluate and cfg.train.eval_every:
        raise UserError(f"--no-eval-check leaves out the judge, but train.eval_every={cfg.train.eval_every} "
                        "evaluates with it during training; set --set train.eval_every=0 or drop --no-eval-check")
    require(cfg, reads_data=get_method(cfg.train.method).reads_data(cfg), evaluate=evaluate, preset=cfg.preset)
    if evaluate:
        from swapbench.eval.suite import load_suite

        load_suite(cfg.eval.suite, cfg.eval.seeds, cfg.edit_set)  # the edits' labels: before training, not after


def run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from swapbench.devices import is_cpu
    from swapbench.train.methods import get_method

    cfg, run_dir, changes = _resumed_config(args) if args.resume else (_new_config(args), None, {})
    _preflight(cfg, evaluate=not args.no_eval_check)
    # Joins the process group under accelerate launch / torchrun; a no-op in one process.
    state = PartialState(cpu=is_cpu(cfg.device))
    if run_dir is None:
        run_dir = _new_run_dir(cfg, state)
    state.wait_for_everyone()

    setup_started = time.perf_counter()
    method = get_method(cfg.train.method)
    if not method.trains:  # loop-free methods (closed-form edit, token control): no loop, no checkpoints
        return _edit(method, cfg, run_dir, state)
    from swapbench.train.recipe import SwapRecipe

    return _train(SwapRecipe(cfg, run_dir, changes), cfg, run_dir, changes, state, resume=bool(args.resume),
                  setup_started=setup_started)


def _new_config(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides)
    for key, value in (("seed", args.seed), ("device", args.device), ("data.source", args.data),
                       ("model.pretrained", args.model), ("output_dir", args.out), ("name", args.name),
                       ("export.push_to_hub", args.push_to_hub), ("train.method", args.method)):
        if value is not None:
            overrides.append(f"{key}={value}")
    return load_config(args.preset, args.config, overrides)


def _new_run_dir(cfg: Config, state: PartialState) -> RunDir:
    """Name the run (every process the same name), refuse a finished one, and write its config.json."""
    from accelerate.utils import broadcast_object_list

    from swapbench.io import atomic_write_json
    from swapbench.rundir import RunDir

    if cfg.name is None:
        # Every process must name the same folder: the main process's clock decides.
        name = [f"{cfg.preset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"]
        broadcast_object_list(name)
        cfg.name = name[0]
    run_dir = RunDir(Path(cfg.output_dir) / cfg.name)
    if run_dir.finished:
        raise UserError(f"run {run_dir.root} already finished; pass another --name")
    if state.is_main_process:
        try:
            run_dir.root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(run_dir.config, cfg.to_dict())
        except OSError as e:
            raise UserError(f"cannot write the run directory {run_dir.root} ({e.strerror}); "
                            "pass a writable --out") from None
    return run_dir


def _edit(method: Method, cfg: Config, run_dir: RunDir, state: PartialState) -> int:
    from swapbench import STARTED
    from swapbench.progress import console
    from swapbench.train.edit import run_edit

    if state.is_main_process:
        if cfg.train.eval_every or cfg.train.select != "last" or cfg.train.report_to != "none":
            console.print(f"method {method.name} has no training loop: train.eval_every, train.select and "
                          "train.report_to do not apply (evaluate the model with swapbench eval)")
        run_edit(method, cfg, run_dir, STARTED)
        if cfg.export.push_to_hub:
            _push(run_dir.model, cfg.export.push_to_hub, cfg.export.private)
        print(run_dir.root)
    state.wait_for_everyone()
    return 0


def _train(recipe: SwapRecipe, cfg: Config, run_dir: RunDir, changes: dict, state: PartialState, resume: bool,
           setup_started: float) -> int:
    """Set up, train, select and export; the main process then writes train_summary.json and reports."""
    from functools import partial

    from swapbench import STARTED
    from swapbench.commands.in_loop_eval import InLoopEvaluator
    from swapbench.io import atomic_write_json
    from swapbench.progress import console
    from swapbench.train.recipe import Interrupted

    # The loop gets the evaluation as a callable: training itself never imports eval or the gate.
    recipe.setup(resume=resume, make_evaluator=partial(InLoopEvaluator, cfg, run_dir))
    setup_s = time.perf_counter() - setup_started
    if changes and state.is_main_process:
        _record_resume(cfg, run_dir, changes, recipe.step)
    try:
        result = recipe.train()
    except Interrupted:
        recipe.accelerator.end_training()
        if state.is_main_process:
            console.print(f"interrupted at step {recipe.step}; checkpoint saved. Resume with: "
                          f"swapbench train --resume {run_dir.root}")
        return 130
    selected = recipe.apply_selection()
    export_started = time.perf_counter()
    recipe.export()
    export_s = time.perf_counter() - export_started
    recipe.accelerator.end_training()
    if not state.is_main_process:
        return 0
    if cfg.export.push_to_hub:
        _push(run_dir.model, cfg.export.push_to_hub, cfg.export.private)
    summary = recipe.summary(result, wall=time.perf_counter() - STARTED, startup=setup_started - STARTED,
                             setup=setup_s, export=export_s, selected=selected)
    atomic_write_json(run_dir.train_summary, summary)
    _report(summary, selected)
    print(run_dir.root)
    return 0


def _record_resume(cfg: Config, run_dir: RunDir, changes: dict, step: int) -> None:
    """Recorded once the checkpoint has loaded under the new values: a refused resume changes nothing."""
    from swapbench.io import append_jsonl, atomic_write_json
    from swapbench.progress import console

    console.print("resuming with changed config: " + ", ".join(f"{k} {old!r} -> {new!r}"
                                                               for k, (old, new) in changes.items()))
    atomic_write_json(run_dir.config, cfg.to_dict())
    append_jsonl(run_dir.resume_log, {"time": datetime.now().isoformat(timespec="seconds"), "step": step,
                                      "changes": {k: list(v) for k, v in changes.items()}})


def _report(summary: dict, selected: dict) -> None:
    from swapbench.progress import console
    from swapbench.train.in_loop import announce

    console.print(f"trained {summary['steps_this_run']} steps in {summary['wall_s']:.0f} s on "
                  f"{summary['processes']} process(es): start-up and imports "
                  f"{summary['startup_s']:.0f} s, data + feature cache {summary['setup_s']:.0f} s, "
                  f"loop {summary['train_loop_s']:.0f} s ({summary['img_per_s']:.0f} img/s); "
                  f"final loss {summary['final_loss']:.4f}", soft_wrap=True)  # a log line is never cut mid-phrase
    if summary["in_loop_eval"]:
        e = summary["in_loop_eval"]
        console.print(f"in-loop evaluation: {e['evaluations']} x suite {e['suite']}, {e['seconds']:.0f} s "
                      f"({100 * e['share_of_wall']:.0f}% of the wall time); eval_log.jsonl", soft_wrap=True)
    announce(selected)


def _push(folder: Path, repo: str, private: bool) -> None:
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        api.create_repo(repo, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo)
    except Exception as e:  # network and auth errors come in many types
        raise UserError(f"push to hub repo {repo!r} failed ({type(e).__name__}); the model is saved in {folder}; "
                        "log in with `hf auth login` and check the network, then upload that folder") from None
