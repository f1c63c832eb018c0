"""How a run's ``model/`` is made: one small module per ``train.method``, all behind :class:`Method`.

Each module declares, in its :class:`Method` subclass, everything the rest of swapbench needs to know
about it: what it does (``swapbench train --help``), which weights it changes (the model card), which
config keys shape it (the card's recipe table) and whether it reads training data (the pre-flight
check of the dataset, ``data_audit.json`` and the card's ``datasets``). The modules import their heavy
libraries where they use them, so reading the declarations stays cheap.

Gradient methods (``finetune``, ``lora``) are driven by the one :class:`~swapbench.train.recipe.SwapRecipe`
(setup, loop, checkpoints, resume, export), which asks the method what trains and how ``model/`` is
written. Loop-free methods (``uce``, ``token-swap``, ``esd``) change a copy of the base pipeline's weights
in :meth:`Method.edit` (``esd`` by gradient steps of its own, in one pass without checkpoints). Either way
the result is an ordinary run directory, so ``eval``, ``compare``, ``gate`` and ``sweep`` need no change.
"""

from __future__ import annotations

import importlib
from abc import ABC
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from swapbench.config import CHOICES, Config
from swapbench.rundir import RunDir

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline
    from huggingface_hub import ModelCard

    from swapbench.families import Family


LOOP_KEYS = ("train.trainable", "train.lr", "train.lr_scheduler", "train.warmup_steps", "train.batch_size",
             "train.max_steps", "train.grad_accum", "train.mixed_precision", "data.resolution", "data.subset_size",
             "data.balance_ratio", "data.target_share", "data.drop_both")
"""The config keys of the training loop every gradient method shares."""


class Method(ABC):
    """One way of making the swapped model from the base pipeline, and what it declares about itself."""

    name: ClassVar[str]
    summary: ClassVar[str]
    """What it does, in a phrase (``swapbench train --help``)."""
    edits: ClassVar[str]
    """Which weights it changes and which stay the base model's (the model card)."""
    card_keys: ClassVar[tuple[str, ...]] = ()
    """The config keys the model card's recipe table shows (after the method, the pairs and the seed)."""
    trains: ClassVar[bool] = False
    """Whether it runs the training loop (checkpoints, resume, in-loop evaluation); else :meth:`edit`."""

    def reads_data(self, cfg: Config) -> bool:
        """Whether it reads the training data (``data.source``), and so writes ``data_audit.json``."""
        return self.trains

    # ---- gradient methods: what the recipe's loop trains and writes ------------------------------
    def trainable_parameters(self, denoiser: torch.nn.Module, family: Family, cfg: Config) -> list[torch.nn.Parameter]:
        """What the optimiser updates (the weights ``train.trainable`` names, in the family's terms)."""
        return family.trainable_parameters(denoiser, cfg.train.trainable)

    def export(self, denoiser: torch.nn.Module, family: Family, cfg: Config, run: RunDir, card: ModelCard) -> Path:
        """Main process, after training: write ``model/``, the base pipeline around the trained denoiser."""
        from swapbench.loading import load_pipeline
        from swapbench.train.export import save_pipeline

        # The base's own layout (safety checker, feature extractor, revision, variant) around the tuned denoiser.
        return save_pipeline(load_pipeline(cfg.model, **{family.denoiser: denoiser.eval()}), run.model, card=card)

    # ---- loop-free methods ---------------------------------------------------------------------
    def edit(self, pipe: DiffusionPipeline, cfg: Config, run: RunDir) -> dict[str, Any]:
        """Change ``pipe``'s weights in place (loop-free methods); returns what train_summary.json records."""
        raise NotImplementedError(f"method {self.name!r} trains with a recipe; it has no direct edit")


def get_method(name: str) -> Method:
    """The method ``train.method`` names: ``METHOD`` of the module of that name (``-`` written ``_``)."""
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}").METHOD


def all_methods() -> list[Method]:
    """Every method, in the order of ``config.CHOICES["train.method"]`` (the names config accepts)."""
    return [get_method(name) for name in CHOICES["train.method"]]
