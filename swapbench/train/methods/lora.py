"""``lora``: peft LoRA adapters on the denoiser's attention projections, trained by the finetune recipe's loop.

Only the adapters train (rank ``train.lora_rank``, scale ``train.lora_alpha / train.lora_rank``, dropout
``train.lora_dropout``, on the modules ``train.lora_targets`` names); the base UNet stays frozen, as in
diffusers' ``train_text_to_image_lora.py``. The run directory gets two exports of the same result:

- ``model/``: the pipeline with the adapters merged into the UNet, so ``eval`` reads it like any run;
- ``lora/pytorch_lora_weights.safetensors``: the adapter in diffusers' LoRA format (peft config in its
  metadata), which a plain ``pipe.load_lora_weights(RUN/lora)`` applies to the base pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from swapbench.config import Config
from swapbench.errors import UserError
from swapbench.rundir import RunDir
from swapbench.train.methods import LOOP_KEYS, Method

if TYPE_CHECKING:
    import torch
    from huggingface_hub import ModelCard

    from swapbench.families import Family

WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def lora_dir(run: RunDir) -> Path:
    return run.root / "lora"


class Lora(Method):
    name = "lora"
    summary = "peft adapters, same loop"
    edits = "the VAE and text encoders are the base model's, LoRA adapters are merged into the denoiser"
    card_keys = (*LOOP_KEYS[1:], "train.lora_rank", "train.lora_alpha", "train.lora_dropout", "train.lora_targets")
    trains = True

    def trainable_parameters(self, denoiser: torch.nn.Module, family: Family, cfg: Config) -> list[torch.nn.Parameter]:
        from peft import LoraConfig

        t = cfg.train
        if t.lora_rank < 1 or t.lora_alpha <= 0 or not 0 <= t.lora_dropout < 1 or not t.lora_targets:
            raise UserError(f"LoRA needs train.lora_rank >= 1 (got {t.lora_rank}), train.lora_alpha > 0 (got "
                            f"{t.lora_alpha}), 0 <= train.lora_dropout < 1 (got {t.lora_dropout}) and at least one "
                            "train.lora_targets entry")
        denoiser.requires_grad_(False)
        config = LoraConfig(r=t.lora_rank, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout,
                            init_lora_weights="gaussian", target_modules=list(t.lora_targets))
        try:
            denoiser.add_adapter(config)
        except ValueError as e:
            if "not found in the base model" not in str(e) and "Target modules" not in str(e):
                raise
            raise UserError(f"train.lora_targets={t.lora_targets} matches no module of the {family.title} "
                            f"{family.denoiser}; name attention projections such as to_q, to_k or to_out.0") from None
        return [p for p in denoiser.parameters() if p.requires_grad]

    def export(self, denoiser: torch.nn.Module, family: Family, cfg: Config, run: RunDir, card: ModelCard) -> Path:
        """``lora/`` (the adapter file), then ``model/``: the base pipeline with that file merged in."""
        from swapbench.io import atomic_write_dir
        from swapbench.loading import load_pipeline
        from swapbench.train.export import save_pipeline

        layers = family.lora_layers(denoiser)
        # The peft config rides in the file's metadata, so a loader applies alpha / rank, not an assumed 1.
        target = atomic_write_dir(lora_dir(run), lambda tmp: family.save_lora(
            tmp, layers, denoiser.peft_config["default"].to_dict(), WEIGHT_NAME))
        # Merged through the public loader: the exported model is what a user applying the file gets.
        pipe = load_pipeline(cfg.model)
        pipe.load_lora_weights(target, weight_name=WEIGHT_NAME)
        pipe.fuse_lora()
        pipe.unload_lora_weights()
        return save_pipeline(pipe, run.model, card=card)


METHOD = Lora()
