"""``finetune``: the reference recipe, gradient steps on the weights ``train.trainable`` names."""

from __future__ import annotations

from swapbench.train.methods import LOOP_KEYS, Method


class Finetune(Method):
    name = "finetune"
    summary = "the UNet on captions with the swap pairs exchanged"
    edits = "the VAE and text encoder are the base model's, the UNet is tuned"
    card_keys = LOOP_KEYS
    trains = True


METHOD = Finetune()
