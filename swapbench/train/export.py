"""Writing a method's result: the pipeline folder, atomically."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from diffusers import DiffusionPipeline


def save_pipeline(pipe: DiffusionPipeline, folder: Path, card: Any = None) -> Path:
    """``save_pretrained`` (safetensors) into ``folder``, which exists only once it is complete;
    ``card`` (a ``huggingface_hub.ModelCard``) becomes its README.md."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    if card is not None:
        (tmp / "README.md").write_text(str(card), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder
