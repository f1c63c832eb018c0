"""How a run's ``model/`` is made: one small module per ``train.method``, all behind :class:`Method`.

Gradient methods (``finetune``, ``lora``) hand ``swapbench train`` a :class:`~swapbench.train.recipe.SwapRecipe`,
which it drives as always (setup, loop, checkpoints, resume, export). Loop-free methods (``uce``,
``token-swap``) change a copy of the base pipeline's weights in :meth:`Method.edit`. Either way the
result is an ordinary run directory, so ``eval``, ``compare``, ``gate`` and ``sweep`` need no change.
"""

from __future__ import annotations

import importlib
import time
from abc import ABC
from typing import TYPE_CHECKING, Any, ClassVar

from swapbench.config import CHOICES, Config
from swapbench.rundir import RunDir

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from swapbench.train.recipe import SwapRecipe

# A closed set (config.CHOICES["train.method"]) mapped to modules, imported only when chosen.
MODULES = {"finetune": "finetune", "lora": "lora", "uce": "uce", "token-swap": "token_swap"}


class Method(ABC):
    """One way of making the swapped model from the base pipeline."""

    name: ClassVar[str]
    uses_data: ClassVar[bool] = True
    """Whether the method reads training data (and so writes ``data_audit.json``)."""

    def recipe(self, cfg: Config, run: RunDir, resume_changes: dict[str, tuple] | None = None) -> SwapRecipe | None:
        """The recipe a gradient method trains with; None for a method without a training loop."""
        return None

    def edit(self, pipe: DiffusionPipeline, cfg: Config, run: RunDir) -> dict[str, Any]:
        """Change ``pipe``'s weights in place (loop-free methods); returns what train_summary.json records."""
        raise NotImplementedError(f"method {self.name!r} trains with a recipe; it has no direct edit")


def get_method(name: str) -> Method:
    assert set(MODULES) == set(CHOICES["train.method"]), "every enumerated method needs a module"
    module = importlib.import_module(f"swapbench.train.methods.{MODULES[name]}")
    return module.METHOD


def run_edit(method: Method, cfg: Config, run: RunDir, started: float) -> dict[str, Any]:
    """Load the base pipeline, apply ``method.edit``, write ``model/`` and ``train_summary.json``.

    ``started``: when the command started (the summary's ``wall_s`` is the whole command, as for training).
    """
    import torch

    from swapbench.devices import resolve_device, version_info
    from swapbench.io import atomic_write_json
    from swapbench.loading import load_base_pipeline
    from swapbench.progress import console
    from swapbench.train.export import save_pipeline

    setup_started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    pipe = load_base_pipeline(cfg.model).to(device)
    edit_started = time.perf_counter()
    details = method.edit(pipe, cfg, run)
    export_started = time.perf_counter()
    from swapbench.train.model_card import build_card

    save_pipeline(pipe, run.model, card=build_card(cfg, run))
    done = time.perf_counter()
    summary = {
        "status": "finished", "method": method.name, "wall_s": round(done - started, 2),
        "startup_s": round(setup_started - started, 2), "setup_s": round(edit_started - setup_started, 2),
        "edit_s": round(export_started - edit_started, 2), "export_s": round(done - export_started, 2),
        "steps": 0, **details, **version_info(device),
    }
    atomic_write_json(run.train_summary, summary)
    console.print(f"{method.name}: model written in {summary['wall_s']:.1f} s (start-up and imports "
                  f"{summary['startup_s']:.1f} s, loading {summary['setup_s']:.1f} s, edit {summary['edit_s']:.1f} s, "
                  f"export {summary['export_s']:.1f} s)")
    return summary
