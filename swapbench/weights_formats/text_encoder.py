"""``text-encoder``: a text encoder's state dict, from a file of its keys (``text_model.*`` for CLIP) or the
weights of a ``CLIPTextModel`` folder (AdvUnlearn publishes both). It goes into the family's text encoder whose
keys and shapes it fits, the first one when several do."""

from __future__ import annotations

from swapbench.errors import UserError
from swapbench.weights_formats import Base, Weights, WeightsFormat, fits, load_state, problem


def _encoders(base: Base) -> list:
    """(component name, module) of every text encoder the base pipeline has, in the family's order."""
    pipe = base.pipe
    return [(name, getattr(pipe, name)) for _, name in base.family.text_parts if getattr(pipe, name, None) is not None]


class TextEncoder(WeightsFormat):
    name = "text-encoder"
    detection = ("a flat state dict (a file, or the weights of a CLIPTextModel folder) whose keys all start with one "
                 "of the base's text encoders' top-level names (text_model.* for CLIP)")
    loads = "that text encoder (the first of the family's whose keys and shapes the file fits) with strict=False"

    def detects(self, weights: Weights, base: Base) -> bool:
        return any(fits(weights, module) for _, module in _encoders(base))

    def apply(self, weights: Weights, base: Base):
        tensors, where = weights.tensors(), f"--weights {weights.path}"
        encoders = _encoders(base)
        candidates = [(name, module) for name, module in encoders if fits(weights, module)] or encoders
        for name, module in candidates:
            if problem(module, tensors, where, name) is None:
                return base.pipe, {name: load_state(module, tensors, where, name)}
        name, module = candidates[0]
        raise UserError(problem(module, tensors, where, name))


FORMAT = TextEncoder()
