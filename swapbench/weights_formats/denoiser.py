"""``denoiser``: a state dict of the family's denoiser under diffusers' key names, full or partial.

Partial files are what ESD (``esd-*-esdx.safetensors``) and UCE publish today, only the weights they edit
(``attn2.to_k`` / ``attn2.to_v`` for UCE), loaded by their own code with ``unet.load_state_dict(f,
strict=False)``; full ones are the older ESD, UCE and RECE ``.pt`` files and the UnlearnDiffAtk model zoo.
Both go in the same way here, after :func:`swapbench.weights_formats.problem`'s checks, so a file made for
another base is refused instead of half-loaded.
"""

from __future__ import annotations

from swapbench.weights_formats import Base, Weights, WeightsFormat, fits, load_state


class Denoiser(WeightsFormat):
    name = "denoiser"
    detection = ("a flat state dict whose keys all start with the base denoiser's own top-level names (conv_in, "
                 "down_blocks, ... for a UNet; transformer_blocks, ... for an MMDiT)")
    loads = ("the family's denoiser (unet or transformer) with strict=False: every weight of a full state dict, the "
             "covered ones of a partial one")

    def detects(self, weights: Weights, base: Base) -> bool:
        return fits(weights, base.family.denoiser_of(base.pipe))

    def apply(self, weights: Weights, base: Base):
        family, pipe = base.family, base.pipe
        record = load_state(family.denoiser_of(pipe), weights.tensors(), f"--weights {weights.path}", family.denoiser)
        return pipe, {family.denoiser: record}


FORMAT = Denoiser()
