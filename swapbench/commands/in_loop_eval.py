"""The evaluator ``swapbench train`` hands its training loop when ``train.eval_every`` is set.

It joins the eval layer (:func:`swapbench.eval.evaluate.evaluate`, the function behind ``swapbench eval``)
and the gate's threshold rules; the loop only sees :class:`swapbench.train.in_loop.StepEvaluator`, so
training imports neither.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from swapbench.config import Config
from swapbench.rundir import RunDir


def gate_check(results: dict, rules_path: str | None) -> dict[str, Any]:
    """The gate's threshold rules applied to one evaluation (baseline rules need a baseline: skipped)."""
    from swapbench.reports.gate import evaluate, load_rules

    verdicts = evaluate(results, None, load_rules(rules_path))
    return {"passed": bool(verdicts) and all(v.passed for v in verdicts),
            "failed": [v.metric for v in verdicts if not v.passed]}


class InLoopEvaluator:
    """One suite, judge and base-sample cache set up once; a call evaluates the weights in training."""

    def __init__(self, cfg: Config, run_dir: RunDir, device: torch.device) -> None:
        from swapbench.eval.evaluate import Target
        from swapbench.eval.judge import load_judges
        from swapbench.eval.suite import load_suite
        from swapbench.loading import resolve_model

        self.cfg, self.device = cfg, device
        if cfg.train.select_rules is not None or cfg.train.select == "first-passing":
            from swapbench.reports.gate import load_rules

            load_rules(cfg.train.select_rules)  # a bad rules file fails before the first step, not at the first eval
        self.suite = load_suite(cfg.train.eval_suite, cfg.eval.seeds, cfg.edit_set)
        self.suite_name = self.suite.name
        self.items = list(self.suite.items)
        self.judge, self.others = load_judges(cfg.eval, self.suite.labels, self.suite.judge_templates, device,
                                                  self.suite.nothing)
        base = resolve_model(cfg.model.pretrained)
        self.target = Target(tuned=f"{run_dir.root} (in training)", base=base, name=run_dir.name,
                             run_dir=run_dir.root)

    def __call__(self, pipe: DiffusionPipeline) -> dict[str, Any] | None:
        from swapbench.eval.evaluate import evaluate

        with tempfile.TemporaryDirectory(prefix="swapbench-in-loop-") as tmp:
            results = evaluate(self.cfg, self.target, self.suite, self.items, self.judge, Path(tmp), self.device,
                               tuned_pipe=pipe, others=self.others)
            if results is None:
                return None
            images = _edited_images(results, Path(tmp))
        return {"metrics": results["metrics"], "gate": gate_check(results, self.cfg.train.select_rules),
                "tuned_sampled": results["timing"]["tuned_sampled"], "base_sampled": results["timing"]["base_sampled"],
                "images": images}


def _edited_images(results: dict, out_dir: Path) -> dict[str, np.ndarray]:
    """The kept tuned images of the prompts naming an edited concept (swapped, remapped, erased), per
    concept (N x H x W x 3 uint8), for trackers."""
    from swapbench.catalog import EDITED

    by_concept: dict[str, list[np.ndarray]] = {}
    for row in results.get("per_prompt", []):
        if row.get("group") in EDITED and "images" in row:
            by_concept.setdefault(row["concept"], []).append(
                np.asarray(Image.open(out_dir / row["images"]["tuned"]).convert("RGB")))
    return {c: np.stack(ims) for c, ims in by_concept.items()}
