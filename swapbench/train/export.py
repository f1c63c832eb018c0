"""Writing a method's result: the pipeline folder, atomically."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from swapbench.io import atomic_write_dir

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline


def save_pipeline(pipe: DiffusionPipeline, folder: Path, card: Any = None) -> Path:
    """``save_pretrained`` (safetensors) into ``folder``, which exists only once it is complete;
    ``card`` (a ``huggingface_hub.ModelCard``) becomes its README.md."""

    def write(tmp: Path) -> None:
        pipe.save_pretrained(tmp, safe_serialization=True)
        if card is not None:
            (tmp / "README.md").write_text(str(card), encoding="utf-8")

    return atomic_write_dir(folder, write)
