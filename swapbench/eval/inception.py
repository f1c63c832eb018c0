"""Inception-v3 features for FID/KID (``eval.fid_features: inception``): torchmetrics' ``NoTrainInceptionV3``
(torch-fidelity's port of the TensorFlow FID network) on torch-fidelity's weight file.

The weight file is found where torch.hub keeps it (``$TORCH_HOME/hub/checkpoints/<file>``) or at
``eval.inception_weights``; swapbench never downloads it during an evaluation (``swapbench fetch`` does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from swapbench.errors import UserError
from swapbench.loading import INCEPTION_FILE, INCEPTION_URL, inception_weights_path

FEATURES = "2048"
"""The pool3 layer FID is defined on."""


def describe(path: Path) -> str:
    """What results.json says the FID/KID features were."""
    return f"Inception-v3 pool3 (2048-d, torchmetrics/torch-fidelity network, weights {path.name})"


class InceptionFeatures:
    def __init__(self, weights: str | None = None, device: torch.device | str = "cpu"):
        path = inception_weights_path(weights)
        if not path.is_file():
            raise UserError(f"Inception weights {path.name if weights else INCEPTION_FILE} not found at {path}; "
                            f"download {INCEPTION_URL} to {path} "
                            "(or run `swapbench fetch --set eval.fid_features=inception`), "
                            "or set eval.inception_weights=FILE")
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
        except ModuleNotFoundError:
            raise UserError("eval.fid_features=inception needs torch-fidelity; "
                            "pip install 'swapbench[inception]'") from None
        try:
            # Only tensors may come out of the file (torch-fidelity itself unpickles it fully).
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise ValueError("not a state dict of tensors")
            self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=[FEATURES],
                                          feature_extractor_weights_path=str(path))
        except Exception as e:  # a wrong or corrupt file fails in torch.load or load_state_dict
            raise UserError(f"{path} is not torch-fidelity's Inception weight file ({type(e).__name__}); "
                            f"replace it with {INCEPTION_URL}") from None
        self.net = self.net.to(device)
        self.device = torch.device(device)
        self.path = path
        self.name = describe(path)

    @torch.no_grad()
    def __call__(self, images: np.ndarray, batch_size: int = 32) -> torch.Tensor:
        """``images``: N x H x W x 3 uint8 -> N x 2048 float64 features."""
        out = []
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).permute(0, 3, 1, 2)
            out.append(self.net(batch.to(self.device)).double().cpu())
        return torch.cat(out) if out else torch.empty(0, int(FEATURES), dtype=torch.float64)
