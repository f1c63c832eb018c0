"""``lora``: peft LoRA adapters on the UNet's attention projections, trained by the finetune recipe's loop.

Only the adapters train (rank ``train.lora_rank``, scale ``train.lora_alpha / train.lora_rank``, dropout
``train.lora_dropout``, on the modules ``train.lora_targets`` names); the base UNet stays frozen, as in
diffusers' ``train_text_to_image_lora.py``. The run directory gets two exports of the same result:

- ``model/``: the pipeline with the adapters merged into the UNet, so ``eval`` reads it like any run;
- ``lora/pytorch_lora_weights.safetensors``: the adapter in diffusers' LoRA format (peft config in its
  metadata), which a plain ``pipe.load_lora_weights(RUN/lora)`` applies to the base pipeline.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from diffusers.utils import convert_state_dict_to_diffusers

from swapbench.config import Config
from swapbench.errors import UserError
from swapbench.loading import load_base_pipeline
from swapbench.rundir import RunDir
from swapbench.train.export import save_pipeline
from swapbench.train.methods import Method
from swapbench.train.recipe import SwapRecipe

WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def lora_dir(run: RunDir) -> Path:
    return run.root / "lora"


class LoraRecipe(SwapRecipe):
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        from peft import LoraConfig

        t = self.cfg.train
        if t.lora_rank < 1 or t.lora_alpha <= 0 or not 0 <= t.lora_dropout < 1 or not t.lora_targets:
            raise UserError(f"LoRA needs train.lora_rank >= 1 (got {t.lora_rank}), train.lora_alpha > 0 (got "
                            f"{t.lora_alpha}), 0 <= train.lora_dropout < 1 (got {t.lora_dropout}) and at least one "
                            "train.lora_targets entry")
        self.unet.requires_grad_(False)
        config = LoraConfig(r=t.lora_rank, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout,
                            init_lora_weights="gaussian", target_modules=list(t.lora_targets))
        try:
            self.unet.add_adapter(config)
        except ValueError as e:
            if "not found in the base model" not in str(e) and "Target modules" not in str(e):
                raise
            raise UserError(f"train.lora_targets={t.lora_targets} matches no UNet module; name attention "
                            "projections such as to_q, to_k, to_v, to_out.0 or attn2.to_k") from None
        return [p for p in self.unet.parameters() if p.requires_grad]

    def export(self) -> Path:
        """Main process: write ``lora/`` and ``model/``; the others wait."""
        from peft.utils import get_peft_model_state_dict

        acc = self.accelerator
        if acc.is_main_process:
            unet = acc.unwrap_model(self.unet)
            layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
            target = lora_dir(self.run)
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            # The peft config rides in the file's metadata, so a loader applies alpha / rank, not an assumed 1.
            StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=layers, weight_name=WEIGHT_NAME,
                                                      unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(),
                                                      safe_serialization=True)
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
            # Merged through the public loader: the exported model is what a user applying the file gets.
            pipe = load_base_pipeline(self.cfg.model)
            pipe.load_lora_weights(target, weight_name=WEIGHT_NAME)
            pipe.fuse_lora()
            pipe.unload_lora_weights()
            save_pipeline(pipe, self.run.model, card=self.model_card())
        acc.wait_for_everyone()
        return self.run.model


class Lora(Method):
    name = "lora"

    def recipe(self, cfg: Config, run: RunDir, resume_changes: dict[str, tuple] | None = None) -> SwapRecipe:
        return LoraRecipe(cfg, run, resume_changes)


METHOD = Lora()
