"""The samplers ``eval.sampler`` can name: a diffusers scheduler class and the settings that make it
that sampler, built from the pipeline's own scheduler config (its noise schedule is kept).

Kept free of heavy imports: the config module reads the names to validate ``eval.sampler`` at load
time, before any model is touched.
"""

from __future__ import annotations

from typing import Any

SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
}


def build_scheduler(name: str, config: Any) -> Any:
    """The ``name`` sampler's scheduler on the noise schedule of ``config`` (a scheduler config)."""
    import diffusers

    class_name, settings = SAMPLERS[name]
    return getattr(diffusers, class_name).from_config(config, **settings)
