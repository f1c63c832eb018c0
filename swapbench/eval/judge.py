"""Zero-shot judge: which concept does an image show? (open_clip, several templates averaged)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

WORLD_TEMPLATES = (
    "a photo of a {}.",
    "a {}.",
    "a picture of a {} in the wild.",
    "a {} standing in a field.",
    "there is a {} in the savanna.",
)


@dataclass
class Assessment:
    """What the judge makes of a batch of images, from one pass of its image encoder."""

    probabilities: torch.Tensor
    """N x labels: the softmax over the label scores."""
    features: torch.Tensor
    """N x D L2-normalised image embeddings."""
    labels: list[str]
    """The most probable label of each image."""


class ZeroShotJudge:
    """Labels an image with the argmax of its cosine similarity to each concept's text embedding.

    The class embedding is the normalised mean of the normalised embeddings of every template
    filled with the concept name (open_clip ``build_zero_shot_classifier``).
    """

    def __init__(self, model: open_clip.CLIP, tokenizer, labels: list[str], templates: tuple[str, ...] | list[str],
                 mean: list[float], std: list[float], image_size: int, device: torch.device | str = "cpu",
                 name: str = ""):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.templates = list(templates)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.image_size = image_size
        self.device = torch.device(device)
        self.name = name
        with torch.no_grad():
            self.classifier = open_clip.build_zero_shot_classifier(
                model, tokenizer, self.labels, [t.format for t in self.templates], device=self.device, use_tqdm=False
            ).float()

    @classmethod
    def from_dir(cls, path: str | Path, labels: list[str], templates=WORLD_TEMPLATES, device="cpu",
                 name: str | None = None) -> ZeroShotJudge:
        """Load an open_clip hub-layout folder (``open_clip_config.json`` + weights)."""
        judge = cls.load(str(Path(path).resolve()), labels, templates, device)
        judge.name = name or f"local-dir:{Path(path).resolve()}"
        return judge

    @classmethod
    def load(cls, spec: str, labels: list[str], templates, device="cpu") -> ZeroShotJudge:
        """``world:savanna`` / a local hub-layout folder / ``ARCH/PRETRAINED_TAG`` from the local cache
        (resolved by :func:`swapbench.loading.load_judge`)."""
        from swapbench.loading import load_judge

        j = load_judge(spec, device)
        return cls(j.model, j.tokenizer, labels, templates, j.mean, j.std, j.image_size, device, name=j.name)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: B x 3 x H x W floats in [0, 1]."""
        x = images.to(self.device, torch.float32)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False,
                              antialias=True).clamp(0, 1)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """L2-normalised image embeddings (also the feature extractor for KID/FID)."""
        out = [F.normalize(self.model.encode_image(self._prepare(images[i : i + batch_size])).float(), dim=-1)
               for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.empty(0, self.classifier.shape[0])

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    @torch.no_grad()
    def assess(self, images: torch.Tensor) -> Assessment:
        """Label probabilities, features and labels of ``images``, encoding each image once."""
        features = self.features(images)
        probabilities = (self.model.logit_scale.exp().float() * features @ self.classifier).softmax(dim=-1)
        labels = [self.labels[i] for i in probabilities.argmax(dim=-1).tolist()]
        return Assessment(probabilities, features, labels)

    def classify(self, images: torch.Tensor) -> list[str]:
        return self.assess(images).labels
