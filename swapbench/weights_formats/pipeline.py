"""``pipeline``: a whole diffusers pipeline folder (MACE, FMN publish these). It replaces the base rather than
editing it, so the base is never loaded for it; it must be of the base's family, whose base half it is
compared with."""

from __future__ import annotations

from swapbench.errors import UserError
from swapbench.weights_formats import Base, Weights, WeightsFormat


class Pipeline(WeightsFormat):
    name = "pipeline"
    detection = "a folder holding model_index.json"
    loads = "every component of that pipeline, in place of the base's (same family as the base)"

    def detects(self, weights: Weights, base: Base) -> bool:
        return weights.is_pipeline

    def apply(self, weights: Weights, base: Base):
        import torch

        from swapbench.loading import family_of, load_pipeline, resolve_model

        if not weights.is_pipeline:
            raise UserError(f"--weights {weights.path} is not a diffusers pipeline folder (no model_index.json); "
                            "leave --weights-format at auto to detect its format")
        folder = resolve_model(str(weights.path))
        family = family_of(folder)
        if family.name != base.family.name:
            raise UserError(f"--weights {weights.path} is a {family.title} pipeline but the base {base.name} is "
                            f"{base.family.title}; pass a base of its family with --base")
        pipe = load_pipeline(folder, safety_checker=False)
        loaded = {name: {"tensors": len(module.state_dict()), "of": len(module.state_dict()), "load": "strict"}
                  for name, module in pipe.components.items() if isinstance(module, torch.nn.Module)}
        return pipe, loaded


FORMAT = Pipeline()
