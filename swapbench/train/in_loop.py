"""Evaluation inside training (``train.eval_every``) and the checkpoint choice it allows (``train.select``).

Every ``train.eval_every`` steps and at the last step, the weights in training are sampled and scored by
a :class:`StepEvaluator` that ``swapbench train`` hands the loop (``swapbench.commands.in_loop_eval``:
:func:`swapbench.eval.evaluate.evaluate`, the function behind ``swapbench eval``): same suite items and
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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file, save_file

from swapbench import catalog
from swapbench.config import Config
from swapbench.errors import UserError
from swapbench.io import append_jsonl, atomic_write_dir, atomic_write_json, read_json, truncate_jsonl
from swapbench.progress import console
from swapbench.rundir import RunDir

SELECTED_FILE = "trainable.safetensors"


def selection_dir(run: RunDir) -> Path:
    """The weights ``first-passing`` chose; beside the rotated ``step-N`` checkpoints, never rotated."""
    return run.checkpoints / "first-passing"


class StepEvaluator(Protocol):
    """What the loop needs from an evaluation. ``swapbench train`` builds it (the command layer joins eval
    and the gate), so the training layer imports neither."""

    suite_name: str

    def __call__(self, pipe: DiffusionPipeline) -> dict[str, Any] | None:
        """Evaluate ``pipe``. The main process returns ``metrics``, ``gate`` (``passed``, ``failed``),
        ``tuned_sampled``, ``base_sampled`` and ``images`` (per swap concept); the others None."""
        ...


@dataclass
class InLoopEval:
    """Runs ``evaluator`` at the due steps and keeps the eval_log rows and the time it took."""

    cfg: Config
    run_dir: RunDir
    evaluator: StepEvaluator
    seconds: float = 0.0
    """Wall time spent evaluating in this command (the summary's eval share)."""
    rows: list[dict] = field(default_factory=list)

    def due(self, step: int, last: int) -> bool:
        every = self.cfg.train.eval_every
        return bool(every) and (step % every == 0 or step == last)

    def run(self, step: int, denoiser: torch.nn.Module, pipe: DiffusionPipeline, elapsed: float) -> dict | None:
        """Evaluate ``denoiser`` (the unwrapped model in training) in ``pipe``'s other components.

        Every process samples its share; the main process scores, appends the eval_log row and returns it."""
        from swapbench.families import for_pipeline

        started = time.perf_counter()
        was_training = denoiser.training
        denoiser.eval()
        tuned = type(pipe)(**{**pipe.components, for_pipeline(pipe).denoiser: denoiser})
        try:
            out = self.evaluator(tuned)
        finally:
            denoiser.train(was_training)
        seconds = time.perf_counter() - started
        self.seconds += seconds
        if out is None:
            return None
        row = {"step": step, "wall_s": round(seconds, 3), "elapsed_s": round(elapsed, 3),
               "suite": self.evaluator.suite_name, "metrics": out["metrics"], "gate": out["gate"],
               "tuned_sampled": out["tuned_sampled"], "base_sampled": out["base_sampled"]}
        append_jsonl(self.run_dir.eval_log, row)
        self.rows.append(row)
        return dict(row, images=out["images"])  # the images go to trackers, not into the log


def format_metrics(row: dict) -> str:
    m = row["metrics"]
    # each edit's own number (swap_success/A->B, remap_success/A->B, erase_success/A), as the terminal summary
    edits = [name for name in m if (fam := catalog.family(name)) and fam.per_edit and fam.pooled
             and catalog.split(name)[1] is not None and catalog.judge_of(name)[0] is None]
    parts = [f"{name} {m[name]['value']:.2f}" for name in edits]
    if "preservation" in m:
        parts.append(f"preservation {m['preservation']['value']:.2f}")
    return ", ".join(parts) + f"; gate {'pass' if row['gate']['passed'] else 'fail'}"


# ---- train.select ------------------------------------------------------------------------------------
def trainable_state(denoiser: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights the optimiser updates (all of the denoiser, its text-reading subset, or LoRA adapters)."""
    return {name: p.detach().to("cpu", copy=True).contiguous() for name, p in denoiser.named_parameters()
            if p.requires_grad}


def save_selection(run: RunDir, step: int, denoiser: torch.nn.Module) -> None:
    """Main process: keep this step's trainable weights."""

    def write(tmp: Path) -> None:
        save_file(trainable_state(denoiser), str(tmp / SELECTED_FILE))
        atomic_write_json(tmp / "state.json", {"step": step})

    atomic_write_dir(selection_dir(run), write)


def selected_step(run: RunDir) -> int | None:
    state = selection_dir(run) / "state.json"
    return read_json(state)["step"] if state.is_file() else None


def restore_selection(run: RunDir, denoiser: torch.nn.Module) -> int:
    """Load the kept weights into ``denoiser``; returns their step."""
    weights = load_file(str(selection_dir(run) / SELECTED_FILE))
    missing, unexpected = denoiser.load_state_dict(weights, strict=False)
    trainable = {name for name, p in denoiser.named_parameters() if p.requires_grad}
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
