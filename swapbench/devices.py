"""The device a command runs on and the environment a summary records (devices, versions, peak memory).

Low so that training, evaluation and the commands share one reading of ``--device auto``.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from swapbench import __version__


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> cuda when present, else cpu; anything else is taken as a torch device name."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def is_cpu(spec: str) -> bool:
    return resolve_device(spec).type == "cpu"


def mixed_precision(spec: str, device: torch.device) -> str:
    """``train.mixed_precision`` on ``device``: ``auto`` is bf16 on a GPU that has it and ``no`` (fp32) elsewhere."""
    if spec == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"
    return spec


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def version_info(device: torch.device | None = None) -> dict[str, Any]:
    """Peak memory (GPU when there is one, else host RSS), device, package versions and threads."""
    import diffusers
    import transformers

    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else peak_rss_mb()
    return {"peak_memory_mb": round(peak, 1), "device": str(device or "cpu"),
            "versions": {"swapbench": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
                         "transformers": transformers.__version__, "python": platform.python_version()},
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
