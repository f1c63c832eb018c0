"""Judges: which concept does an image show?

The primary judge is zero-shot open_clip (several templates averaged); further judges
(``eval.judges``) are open_clip judges too, or torchvision ImageNet classifiers read through a
label -> ImageNet class mapping (``ImageNetJudge``, the ESD/UCE protocol).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
import yaml

from swapbench.assets import asset_path
from swapbench.errors import UserError
from swapbench.loading import IMAGENET_CLASSES, further_judges, load_torchvision, resolve_judge

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
    features: torch.Tensor | None
    """N x D L2-normalised image embeddings; None for a classifier judge (no embedding space)."""
    labels: list[str]
    """The most probable label of each image."""


class ZeroShotJudge:
    """Labels an image with the argmax of its cosine similarity to each concept's text embedding.

    The class embedding is the normalised mean of the normalised embeddings of every template
    filled with the concept name (open_clip ``build_zero_shot_classifier``).
    """

    def __init__(self, model: open_clip.CLIP, tokenizer, labels: list[str], templates: tuple[str, ...] | list[str],
                 mean: list[float], std: list[float], image_size: int, device: torch.device | str = "cpu",
                 name: str = "", texts: dict[str, list[str]] | None = None):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.templates = list(templates)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.image_size = image_size
        self.device = torch.device(device)
        self.name = name
        self.texts = dict(texts or {})
        """Labels read from their own texts instead of the templates (a suite's ``nothing`` labels)."""
        concepts = [label for label in self.labels if label not in self.texts]
        with torch.no_grad():
            columns = dict(zip(concepts, open_clip.build_zero_shot_classifier(
                model, tokenizer, concepts, [t.format for t in self.templates], device=self.device, use_tqdm=False
            ).float().T, strict=True))
            for label, own in self.texts.items():
                columns[label] = F.normalize(self.text_features(own).mean(0), dim=-1)
            self.classifier = torch.stack([columns[label] for label in self.labels], dim=1)

    @classmethod
    def from_dir(cls, path: str | Path, labels: list[str], templates=WORLD_TEMPLATES, device="cpu",
                 name: str | None = None) -> ZeroShotJudge:
        """Load an open_clip hub-layout folder (``open_clip_config.json`` + weights)."""
        judge = cls.load(str(Path(path).resolve()), labels, templates, device)
        judge.name = name or f"local-dir:{Path(path).resolve()}"
        return judge

    @classmethod
    def load(cls, spec: str, labels: list[str], templates, device="cpu",
             texts: dict[str, list[str]] | None = None) -> ZeroShotJudge:
        """``world:savanna`` / a local hub-layout folder / ``ARCH/PRETRAINED_TAG`` from the local cache
        (resolved by :func:`swapbench.loading.load_judge`)."""
        from swapbench.loading import load_judge

        j = load_judge(spec, device)
        return cls(j.model, j.tokenizer, labels, templates, j.mean, j.std, j.image_size, device, name=j.name,
                   texts=texts)

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

    def provenance(self) -> dict[str, Any]:
        return {"spec": self.name, "kind": "open_clip", "templates": self.templates,
                **({"nothing": self.texts} if self.texts else {})}


OTHER = "other"
"""A classifier judge's label for an image whose top-1 class belongs to no suite label ("none of these")."""
CLASSES_FILE = "eval/judges/imagenet.yaml"


class ImageNetJudge:
    """Labels an image with the suite label whose ImageNet classes hold the classifier's top-1 class, else
    ``OTHER`` (ESD's and UCE's protocol: ResNet-50 top-1). A label's probability is the summed softmax of its
    classes, ``OTHER``'s the rest; a label without classes has probability 0 and is never given."""

    def __init__(self, model: torch.nn.Module, transforms, classes: dict[str, list[int]], labels: list[str],
                 device: torch.device | str = "cpu", name: str = "", weights: str = "", classes_file: str = ""):
        self.model = model.eval().to(device)
        self.transforms = transforms
        self.labels = [*labels, OTHER]
        self.device = torch.device(device)
        self.name, self.weights, self.classes_file = name, weights, classes_file
        self.unmapped = [label for label in labels if not classes[label]]
        # class index -> position of its label in self.labels (OTHER for the classes of no label)
        self.owner = torch.full((IMAGENET_CLASSES,), len(labels), dtype=torch.long, device=self.device)
        for j, label in enumerate(labels):
            self.owner[classes[label]] = j

    @classmethod
    def load(cls, spec: str, labels: list[str], classes_file: str | None = None,
             device: torch.device | str = "cpu", nothing: list[str] | tuple[str, ...] = ()) -> ImageNetJudge:
        """``torchvision:ARCH[/WEIGHTS]`` from torch.hub's checkpoint folder (``swapbench fetch`` fills it).
        ``nothing``: the suite's "none of these" labels, which own no class (``OTHER`` says it)."""
        concepts = [label for label in labels if label not in nothing]
        classes, shown = imagenet_classes(classes_file, concepts)
        classes |= dict.fromkeys(nothing, [])
        source = resolve_judge(spec)
        model, transforms = load_torchvision(source)
        weights = f"{source.arch} {source.tag} ({source.file.name if source.file else ''})"
        return cls(model, transforms, classes, labels, device, spec, weights, shown)

    @torch.no_grad()
    def assess(self, images: torch.Tensor, batch_size: int = 64) -> Assessment:
        """``images``: B x 3 x H x W floats in [0, 1], preprocessed by the weights' own transforms."""
        chunks = [self.model(self.transforms(images[i : i + batch_size].to(self.device, torch.float32)))
                  .float().softmax(dim=-1) for i in range(0, len(images), batch_size)]
        classes = torch.cat(chunks) if chunks else torch.empty(0, IMAGENET_CLASSES, device=self.device)
        probabilities = torch.zeros(len(classes), len(self.labels), device=self.device)
        probabilities.index_add_(1, self.owner, classes)
        labels = [self.labels[i] for i in self.owner[classes.argmax(dim=-1)].tolist()]
        return Assessment(probabilities, None, labels)

    def provenance(self) -> dict[str, Any]:
        return {"spec": self.name, "kind": "torchvision", "weights": self.weights, "classes": self.classes_file,
                "no_imagenet_class": self.unmapped}


Judge = ZeroShotJudge | ImageNetJudge


def imagenet_classes(path: str | None, labels: list[str]) -> tuple[dict[str, list[int]], str]:
    """Each suite label's ImageNet-1k class indices from ``path`` (default the shipped ``CLASSES_FILE``;
    labels match case-insensitively), and how to name the file in provenance."""
    file = Path(path).expanduser() if path else asset_path(CLASSES_FILE)
    shown = str(file) if path else CLASSES_FILE
    try:
        table = yaml.safe_load(file.read_text(encoding="utf-8"))["labels"]
        classes = {str(label).lower(): [int(i) for i in indices or []] for label, indices in table.items()}
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"ImageNet class mapping {shown} cannot be read ({type(e).__name__}); it needs "
                        "labels: {LABEL: [ImageNet indices]} (eval.judge_classes)") from None
    if OTHER in (label.lower() for label in labels):
        raise UserError(f"a suite label is {OTHER!r}, the word a classifier judge uses for 'none of these'; "
                        "rename the label")
    missing = [label for label in labels if label.lower() not in classes]
    if missing:
        raise UserError(f"ImageNet class mapping {shown} has no entry for {', '.join(missing)}; add each with its "
                        "ImageNet-1k indices, or [] when ImageNet has no class for it (eval.judge_classes)")
    chosen = {label: classes[label.lower()] for label in labels}
    seen: dict[int, str] = {}
    for label, indices in chosen.items():
        for i in indices:
            if not 0 <= i < IMAGENET_CLASSES or seen.setdefault(i, label) != label:
                raise UserError(f"ImageNet class mapping {shown}: class {i} of {label!r} is "
                                + ("out of range" if not 0 <= i < IMAGENET_CLASSES else f"also {seen[i]!r}'s")
                                + "; each class belongs to one label, 0-999")
    return chosen, shown


def load_judges(eval_cfg: Any, labels: list[str], templates: list[str], device: torch.device | str = "cpu",
                nothing: dict[str, list[str]] | None = None) -> tuple[ZeroShotJudge, dict[str, Judge]]:
    """The primary judge (``eval.judge``) and the further ones (``eval.judges``) by name, all loaded before
    any image is drawn so that a missing file fails in seconds. ``nothing``: the suite's "none of these"
    labels of an erasing run, each with the texts an open_clip judge reads it from."""
    further = further_judges(eval_cfg)
    primary = ZeroShotJudge.load(eval_cfg.judge, labels, templates, device, nothing)
    others: dict[str, Judge] = {}
    for name, spec in further:
        if resolve_judge(spec).kind == "torchvision":
            others[name] = ImageNetJudge.load(spec, labels, eval_cfg.judge_classes, device, tuple(nothing or ()))
        else:
            others[name] = ZeroShotJudge.load(spec, labels, templates, device, nothing)
    return primary, others
