"""Evaluation inside training (``train.eval_every``) and the checkpoint choice it allows (``train.select``).

Every ``train.eval_every`` steps and at the last step, the weights in training are sampled and scored by
:func:`swapbench.eval.evaluate.evaluate`, the function behind ``swapbench eval``: same suite items and
seeds, same sampler settings (``eval.*``), same judge, same base-sample cache. So a row of
``RUN/eval_log.jsonl`` holds the metrics ``swapbench eval --suite S`` gives for the weights of that step,
and after the first evaluation only the tuned half is sampled. Under several processes the sampling
batches are dealt out as in ``swapbench eval``; the main process judges, scores and writes.

``train.select: first-passing`` keeps the trainable weights of the earliest evaluated step at which the
gate rules pass (``checkpoints/first-passing/``, so an interrupted run keeps its choice) and the export
writes those instead of the last step's.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image
from safetensors.torch import load_file, save_file

from swapbench.config import Config
from swapbench.errors import UserError
from swapbench.io import append_jsonl, atomic_write_json, read_json, truncate_jsonl
from swapbench.progress import console
from swapbench.rundir import RunDir

SELECTED_FILE = "trainable.safetensors"


def selection_dir(run: RunDir) -> Path:
    """The weights ``first-passing`` chose; beside the rotated ``step-N`` checkpoints, never rotated."""
    return run.checkpoints / "first-passing"


def gate_check(results: dict, rules_path: str | None) -> dict[str, Any]:
    """The gate's threshold rules applied to one evaluation (baseline rules need a baseline: skipped)."""
    from swapbench.reports.gate import evaluate, load_rules

    verdicts = evaluate(results, None, load_rules(rules_path))
    return {"passed": bool(verdicts) and all(v.passed for v in verdicts),
            "failed": [v.metric for v in verdicts if not v.passed]}


@dataclass
class InLoopEval:
    """One suite, judge and base-sample cache set up once; :meth:`run` evaluates the current weights."""

    cfg: Config
    run_dir: RunDir
    device: torch.device
    seconds: float = 0.0
    """Wall time spent evaluating in this command (the summary's eval share)."""
    rows: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        from swapbench.eval.evaluate import Target
        from swapbench.eval.judge import ZeroShotJudge
        from swapbench.eval.suite import load_suite
        from swapbench.loading import resolve_model

        cfg = self.cfg
        if cfg.train.select_rules is not None or cfg.train.select == "first-passing":
            from swapbench.reports.gate import load_rules

            load_rules(cfg.train.select_rules)  # a bad rules file fails before the first step, not at the first eval
        self.suite = load_suite(cfg.train.eval_suite, cfg.eval.seeds, cfg.data.swap_pairs)
        self.items = list(self.suite.items)
        self.judge = ZeroShotJudge.load(cfg.eval.judge, self.suite.labels, self.suite.judge_templates, self.device)
        base = resolve_model(cfg.model.pretrained)
        self.target = Target(tuned=f"{self.run_dir.root} (in training)", base=base, name=self.run_dir.name,
                             run_dir=self.run_dir.root)

    def due(self, step: int, last: int) -> bool:
        every = self.cfg.train.eval_every
        return bool(every) and (step % every == 0 or step == last)

    def run(self, step: int, unet: torch.nn.Module, pipe: DiffusionPipeline, elapsed: float) -> dict | None:
        """Evaluate ``unet`` (the unwrapped model in training) in ``pipe``'s other components.

        Every process samples its share; the main process scores, appends the eval_log row and returns it."""
        from swapbench.eval.evaluate import evaluate

        started = time.perf_counter()
        was_training = unet.training
        unet.eval()
        tuned = type(pipe)(**{**pipe.components, "unet": unet})
        try:
            with tempfile.TemporaryDirectory(prefix="swapbench-in-loop-") as tmp:
                results = evaluate(self.cfg, self.target, self.suite, self.items, self.judge, Path(tmp), self.device,
                                   tuned_pipe=tuned)
                images = _swap_images(results, Path(tmp)) if results is not None else {}
        finally:
            unet.train(was_training)
        seconds = time.perf_counter() - started
        self.seconds += seconds
        if results is None:
            return None
        row = {"step": step, "wall_s": round(seconds, 3), "elapsed_s": round(elapsed, 3), "suite": self.suite.name,
               "metrics": results["metrics"], "gate": gate_check(results, self.cfg.train.select_rules),
               "tuned_sampled": results["timing"]["tuned_sampled"], "base_sampled": results["timing"]["base_sampled"]}
        append_jsonl(self.run_dir.eval_log, row)
        self.rows.append(row)
        return dict(row, images=images)  # the images go to trackers, not into the log


def _swap_images(results: dict, out_dir: Path) -> dict[str, np.ndarray]:
    """The kept tuned images of the swap prompts, per swap concept (N x H x W x 3 uint8), for trackers."""
    by_concept: dict[str, list[np.ndarray]] = {}
    for row in results.get("per_prompt", []):
        if row.get("group") == "swap" and "images" in row:
            by_concept.setdefault(row["concept"], []).append(
                np.asarray(Image.open(out_dir / row["images"]["tuned"]).convert("RGB")))
    return {c: np.stack(ims) for c, ims in by_concept.items()}


def format_metrics(row: dict) -> str:
    m = row["metrics"]
    parts = [f"{name.split('/', 1)[1]} {m[name]['value']:.2f}" for name in m if name.startswith("swap_success/")]
    if "preservation" in m:
        parts.append(f"preservation {m['preservation']['value']:.2f}")
    return ", ".join(parts) + f"; gate {'pass' if row['gate']['passed'] else 'fail'}"


# ---- train.select ------------------------------------------------------------------------------------
def trainable_state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights the optimiser updates (all of the UNet, its cross-attention K/V, or LoRA adapters)."""
    return {name: p.detach().to("cpu", copy=True).contiguous() for name, p in unet.named_parameters() if p.requires_grad}


def save_selection(run: RunDir, step: int, unet: torch.nn.Module) -> None:
    """Main process: keep this step's trainable weights (written to a temporary folder, then renamed)."""
    target = selection_dir(run)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(unet), str(tmp / SELECTED_FILE))
    atomic_write_json(tmp / "state.json", {"step": step})
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def selected_step(run: RunDir) -> int | None:
    state = selection_dir(run) / "state.json"
    return read_json(state)["step"] if state.is_file() else None


def restore_selection(run: RunDir, unet: torch.nn.Module) -> int:
    """Load the kept weights into ``unet``; returns their step."""
    weights = load_file(str(selection_dir(run) / SELECTED_FILE))
    missing, unexpected = unet.load_state_dict(weights, strict=False)
    trainable = {name for name, p in unet.named_parameters() if p.requires_grad}
    if unexpected or trainable - set(weights):
        raise UserError(f"{selection_dir(run)} does not hold this run's trainable weights; delete that folder and "
                        "resume with --set train.select=last, or train again")
    return selected_step(run)


def on_resume(run: RunDir, step: int) -> None:
    """Main process, resuming at ``step``: eval rows and a selection from after the checkpoint belong to
    steps that will run again."""
    truncate_jsonl(run.eval_log, lambda row: row["step"] <= step)
    chosen = selected_step(run)
    if chosen is not None and chosen > step:
        shutil.rmtree(selection_dir(run))


def selection_summary(cfg: Config, run: RunDir, last_step: int, rows: list[dict]) -> dict[str, Any]:
    """What ``model/`` holds and why (train_summary.json ``selected``)."""
    policy = cfg.train.select
    rules = f"gate rules of {Path(cfg.train.select_rules).name}" if cfg.train.select_rules else "default gate rules"
    if policy == "last":
        return {"policy": "last", "step": last_step, "reason": "train.select=last: the weights of the last step"}
    chosen = selected_step(run)
    evaluated = [r["step"] for r in rows]
    if chosen is not None:
        return {"policy": policy, "step": chosen, "fallback": False, "rules": rules,
                "reason": f"earliest evaluated step at which the {rules} pass (evaluated steps {evaluated})"}
    failed = rows[-1]["gate"]["failed"] if rows else []
    return {"policy": policy, "step": last_step, "fallback": True, "rules": rules,
            "reason": f"no evaluated step passed the {rules} (last evaluation failed {', '.join(failed) or '-'}); "
                      "exported the last step"}


def announce(summary: dict) -> None:
    if summary["policy"] != "last":
        console.print(f"train.select={summary['policy']}: model/ holds step {summary['step']} ({summary['reason']})")
