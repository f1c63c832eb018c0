"""``train.report_to``: experiment trackers through accelerate (``log_with``, ``init_trackers``, ``log``).

Trackers are optional dependencies: a missing one is one line naming the package, before training
starts. Local trackers (TensorBoard, ...) write under ``RUN/trackers/``.
"""

from __future__ import annotations

import json
from typing import Any

from swapbench.config import Config, flatten
from swapbench.errors import UserError
from swapbench.rundir import RunDir

PROJECT = "swapbench"
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "comet_ml": "comet_ml",
            "mlflow": "mlflow", "aim": "aim", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab"}


def tracker_dir(run: RunDir):
    return run.root / "trackers"


def log_with(cfg: Config) -> str | None:
    """The ``Accelerator(log_with=...)`` value, or None; a tracker that is not installed is a UserError."""
    name = cfg.train.report_to
    if name == "none":
        return None
    from accelerate.tracking import get_available_trackers

    if name not in {str(t) for t in get_available_trackers()}:
        extra = f" (or pip install 'swapbench[{name}]')" if name in ("tensorboard", "wandb") else ""
        raise UserError(f"train.report_to={name} needs the {PACKAGES[name]} package, which is not installed; "
                        f"pip install {PACKAGES[name]}{extra}, or set train.report_to=none")
    return name


def hparams(cfg: Config) -> dict[str, Any]:
    """The resolved config as flat scalars (TensorBoard's hparams take bool/str/int/float only)."""
    out: dict[str, Any] = {}
    for key, value in flatten(cfg.to_dict()):
        out[key] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    return out


def start(accelerator, cfg: Config, run: RunDir) -> None:
    if cfg.train.report_to == "none":
        return
    accelerator.init_trackers(PROJECT, config=hparams(cfg), init_kwargs={"wandb": {"name": run.name}})


def metric_scalars(metrics: dict[str, dict]) -> dict[str, float]:
    """Every in-loop metric's value and interval as ``eval/<name>`` scalars."""
    out: dict[str, float] = {}
    for name, m in metrics.items():
        out[f"eval/{name}"] = m["value"]
        out[f"eval/{name}/ci95_lo"], out[f"eval/{name}/ci95_hi"] = m["ci95"]
    return out


def log_images(accelerator, images: dict, step: int) -> None:
    """Tuned samples of the swap prompts, to every tracker that takes images."""
    if not images:
        return
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({f"samples/{c}": ims for c, ims in images.items()}, step=step, dataformats="NHWC")
        elif hasattr(tracker, "log_images"):
            tracker.log_images({f"samples/{c}": list(ims) for c, ims in images.items()}, step=step)
