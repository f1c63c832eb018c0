"""Choosing what trains. Loading the base pipeline lives in :mod:`swapbench.loading`."""

from __future__ import annotations

import torch

from swapbench.errors import UserError


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
