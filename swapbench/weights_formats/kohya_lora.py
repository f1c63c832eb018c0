"""``kohya-lora``: a LoRA in kohya-ss's naming, ``lora_unet_*`` / ``lora_te*_*`` modules with ``.lora_down`` /
``.lora_up`` / ``.alpha`` (SPM publishes its adapters so; so do most community LoRAs).

diffusers' LoRA loaders convert these keys themselves (the SD 1.x/2.x and SDXL loaders through
``_convert_non_diffusers_lora_to_diffusers``, with the ``.alpha`` scales; the FLUX.1 loader through its own
kohya converter); the SD3 loader does not, which :func:`swapbench.weights_formats.lora.fuse` reports. The
file is applied as a plain LoRA at scale 1: SPM's own loader also rescales its adapters per prompt
("facilitated transport"), which this static merge does not reproduce.
"""

from __future__ import annotations

from swapbench.weights_formats import Base, Weights, WeightsFormat
from swapbench.weights_formats.lora import KOHYA_PREFIXES, fuse


class KohyaLora(WeightsFormat):
    name = "kohya-lora"
    detection = "keys starting lora_unet_ / lora_te_ / lora_te1_ / lora_te2_, or holding .lora_down."
    loads = "converted by diffusers' own loader, then fused like a diffusers LoRA (scale 1)"

    def detects(self, weights: Weights, base: Base) -> bool:
        return any(isinstance(k, str) and (k.startswith(KOHYA_PREFIXES) or ".lora_down." in k) for k in weights.content)

    def apply(self, weights: Weights, base: Base):
        return fuse(weights, base)


FORMAT = KohyaLora()
