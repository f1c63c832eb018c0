"""Loading the base pipeline and choosing what trains."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

from swapbench.config import ModelConfig
from swapbench.errors import UserError
from swapbench.world import resolve

REQUIRED = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def resolve_model(spec: str) -> str:
    """``world:savanna`` -> its pipeline folder; a local folder must hold a complete diffusers pipeline."""
    path = resolve(spec, "pipeline")
    if Path(path).is_dir():
        missing = [c for c in REQUIRED if not (Path(path) / c).is_dir()]
        if not (Path(path) / "model_index.json").is_file() or missing:
            raise UserError(f"{path} is not a complete diffusers pipeline (missing "
                            f"{', '.join(missing) or 'model_index.json'}); pass a folder saved with save_pretrained")
    elif Path(path).exists() or path.startswith((".", "/")):
        raise UserError(f"model {path} not found; pass a diffusers pipeline folder or a hub name")
    return path


def load_pipeline(spec: str, revision: str | None = None, variant: str | None = None) -> DiffusionPipeline:
    path = resolve_model(spec)
    kwargs = {"torch_dtype": torch.float32, "revision": revision, "variant": variant}
    try:
        return DiffusionPipeline.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        if Path(path).is_dir():
            raise UserError(f"cannot load the pipeline in {path} ({type(e).__name__}: {str(e).splitlines()[0]})") from None
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise UserError(f"base model {path!r} is not in the local Hugging Face cache"
                        f"{' and HF_HUB_OFFLINE=1 forbids downloading it' if offline else ' and could not be downloaded'}; "
                        f"run `hf download {path}` where there is network, or pass --model PIPELINE_DIR") from None


def local_folder(spec: str, revision: str | None = None) -> Path:
    """The folder holding a pipeline's files: the folder itself, or a hub name's snapshot in the local cache."""
    path = resolve_model(spec)
    if Path(path).is_dir():
        return Path(path)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(path, revision=revision, local_files_only=True))


def load_base_pipeline(model: ModelConfig) -> DiffusionPipeline:
    return load_pipeline(model.pretrained, model.revision, model.variant)


def trainable_parameters(unet: torch.nn.Module, spec: str) -> list[torch.nn.Parameter]:
    """``unet``: every UNet weight; ``unet.cross_attention``: the attn2 key/value projections only
    (the layers that read the text, as in TIME/UCE-style concept edits)."""
    if spec == "unet":
        unet.requires_grad_(True)
        return list(unet.parameters())
    if spec == "unet.cross_attention":
        unet.requires_grad_(False)
        params = []
        for name, module in unet.named_modules():
            if name.endswith("attn2.to_k") or name.endswith("attn2.to_v"):
                module.requires_grad_(True)
                params += list(module.parameters())
        return params
    raise UserError(f"train.trainable={spec!r} is not supported; use 'unet' or 'unet.cross_attention'")
