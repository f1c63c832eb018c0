"""``concept-ablation``: Concept Ablation's ``delta.bin``, ``{'unet': {...}, 'text_encoder': {...}}``.

Its diffusers code saves the UNet's cross-attention key/value weights (``attn2.to_k`` / ``attn2.to_v``, the
default parameter group) or every UNet weight under ``'unet'``, plus the whole text encoder under
``'text_encoder'`` when it trained the embeddings, and loads them by copying each named UNet parameter and
``text_encoder.load_state_dict``. Here ``'unet'`` goes into the family's denoiser and ``'text_encoder'`` into
its first text encoder, both through :func:`swapbench.weights_formats.load_state`.
"""

from __future__ import annotations

from swapbench.errors import UserError
from swapbench.weights_formats import Base, Weights, WeightsFormat, load_state

PARTS = ("unet", "text_encoder")


class ConceptAblation(WeightsFormat):
    name = "concept-ablation"
    detection = "a nested dict with a 'unet' state dict (and optionally 'text_encoder'): delta.bin"
    loads = "'unet' into the family's denoiser (partial: the attn2 K/V, or full), 'text_encoder' into its text encoder"

    def detects(self, weights: Weights, base: Base) -> bool:
        return isinstance(weights.content.get("unet"), dict)

    def apply(self, weights: Weights, base: Base):
        extra = [k for k in weights.content if k not in PARTS]
        if extra or "unet" not in weights.content:
            raise UserError(f"--weights {weights.path}: a Concept Ablation delta holds 'unet' and optionally "
                            f"'text_encoder' (keys seen: {', '.join(map(str, weights.content)) or 'none'})")
        family, pipe = base.family, base.pipe
        components = {"unet": family.denoiser, "text_encoder": family.text_parts[0][1]}
        loaded = {}
        for part in PARTS:
            if part in weights.content:
                component = components[part]
                loaded[component] = load_state(getattr(pipe, component), weights.tensors(part),
                                               f"--weights {weights.path} ({part})", component)
        return pipe, loaded


FORMAT = ConceptAblation()
