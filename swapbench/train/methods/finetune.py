"""``finetune``: the reference recipe of DESIGN §3, gradient steps on the weights ``train.trainable`` names."""

from __future__ import annotations

from swapbench.config import Config
from swapbench.rundir import RunDir
from swapbench.train.methods import Method
from swapbench.train.recipe import SwapRecipe


class Finetune(Method):
    name = "finetune"

    def recipe(self, cfg: Config, run: RunDir, resume_changes: dict[str, tuple] | None = None) -> SwapRecipe:
        return SwapRecipe(cfg, run, resume_changes)


METHOD = Finetune()
