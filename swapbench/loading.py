"""Resolving and loading models: the one place that turns a model spec into files and objects.

A spec names a base pipeline or a judge as users write it: ``world:savanna`` or ``world:savanna-flow``
(the embedded worlds), a local folder, or a Hugging Face hub name (``stable-diffusion-v1-5/stable-diffusion-v1-5``
with a revision and a weights variant such as ``fp16``; ``ViT-B-32/laion2b_s34b_b79k`` for an open_clip
judge). Train, eval, the feature cache and ``swapbench fetch`` all resolve specs here, so a spec
means the same thing everywhere. This module sits below train and eval and imports neither; the
heavy libraries are imported where a model is loaded, so resolving a spec stays cheap.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swapbench.errors import UserError
from swapbench.io import read_json

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

    from swapbench.config import ModelConfig
    from swapbench.families import Family

WORLDS_ROOT = Path(__file__).resolve().parent / "world"
WORLDS = {"savanna": "SWAPBENCH_WORLD", "savanna-flow": "SWAPBENCH_FLOW_WORLD"}
"""The embedded worlds, each shipped in ``swapbench/world/<name>/``, and the environment variable that points
swapbench at another build of it (``swapbench world build --world NAME --out DIR``)."""
SHARED_JUDGE = {"savanna-flow": "savanna"}
"""Worlds that draw the same images as another and so are judged by its judge (not a copy of it)."""
SHIPPED_WORLD = WORLDS_ROOT / "savanna"
WORLD_PREFIX = "world:"
SAFETY_PARTS = ("safety_checker", "feature_extractor")


# ---- the embedded worlds -----------------------------------------------------------------------

def world_dir(name: str = "savanna") -> Path:
    """World ``name`` in use: the folder its environment variable names if set, else the one shipped."""
    check_world(name)
    path = Path(os.environ.get(WORLDS[name]) or WORLDS_ROOT / name)
    if not (path / "manifest.json").is_file():
        raise UserError(f"{name} world not found at {path} (no manifest.json); rebuild it with "
                        f"`swapbench world build --world {name} --out {path}` or reinstall swapbench")
    return path


def check_world(name: str) -> None:
    if name not in WORLDS:
        raise UserError(f"unknown world {name!r}; the embedded worlds are "
                        f"{', '.join(WORLD_PREFIX + w for w in WORLDS)}")


def manifest(path: Path | None = None) -> dict:
    return read_json((path or world_dir()) / "manifest.json")


def resolve_world(spec: str, part: str) -> str:
    """``world:NAME`` -> the path of ``part`` (``pipeline`` or ``judge``; a world sharing another's judge
    resolves to that world's); other specs pass through."""
    if not spec.startswith(WORLD_PREFIX):
        return spec
    name = spec[len(WORLD_PREFIX):]
    check_world(name)
    if part == "judge":
        name = SHARED_JUDGE.get(name, name)
    return str(world_dir(name) / part)


# ---- base pipelines ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSpec:
    """A base pipeline as the config names it (``model.pretrained``, ``model.revision``, ``model.variant``)."""

    name: str
    revision: str | None = None
    variant: str | None = None

    @classmethod
    def of(cls, model: ModelConfig | ModelSpec | str) -> ModelSpec:
        if isinstance(model, ModelSpec):
            return model
        if isinstance(model, str):
            return cls(model)
        return cls(model.pretrained, model.revision, model.variant)

    @property
    def location(self) -> str:
        """A local folder path, or the hub name itself."""
        return resolve_model(self.name)

    @property
    def is_hub(self) -> bool:
        return not Path(self.location).is_dir()


def is_hub_name(spec: str) -> bool:
    """``org/name`` that is not a local path (hub names have exactly one slash and no leading dot or slash)."""
    return spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not Path(spec).exists()


def resolve_model(spec: str) -> str:
    """``world:savanna`` -> its pipeline folder; a local folder must hold a complete diffusers pipeline of a
    supported family; anything else is taken as a hub name."""
    path = resolve_world(spec, "pipeline")
    if Path(path).is_dir():
        index = Path(path) / "model_index.json"
        if not index.is_file():
            raise UserError(f"{path} is not a diffusers pipeline (no model_index.json); pass a folder saved with "
                            "save_pretrained")
        components = read_json(index)
        missing = [c for c in family_of_index(components, path).required_parts(components)
                   if not (Path(path) / c).is_dir()]
        if missing:
            raise UserError(f"{path} is not a complete diffusers pipeline (missing {', '.join(missing)}); pass a "
                            "folder saved with save_pretrained")
    elif Path(path).exists() or not is_hub_name(path):
        raise UserError(f"model {path} not found; pass a diffusers pipeline folder or a hub name")
    return path


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def load_pipeline(model: ModelConfig | ModelSpec | str, revision: str | None = None, variant: str | None = None, *,
                  safety_checker: bool = True, **components: Any) -> DiffusionPipeline:
    """The pipeline in float32. ``safety_checker=False`` leaves SD's checker (and its image processor)
    unloaded: training never uses it and evaluation must see every image as drawn. ``components``
    replace parts (``unet=...``), as in ``DiffusionPipeline.from_pretrained``."""
    import torch
    from diffusers import DiffusionPipeline

    spec = ModelSpec.of(model)
    if revision or variant:
        spec = ModelSpec(spec.name, revision or spec.revision, variant or spec.variant)
    path = spec.location
    if not safety_checker and _has_safety_checker(spec):
        components = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False,
                      **components}
    kwargs = {"torch_dtype": torch.float32, "revision": spec.revision, "variant": spec.variant,
              **_dropped_parts(spec), **components}
    try:
        return DiffusionPipeline.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        if Path(path).is_dir():
            raise UserError(f"cannot load the pipeline in {path} "
                            f"({type(e).__name__}: {str(e).splitlines()[0]})") from None
        raise UserError(
            f"base model {path!r}{_variant_words(spec)} is not in the local Hugging Face cache"
            f"{' and HF_HUB_OFFLINE=1 forbids downloading it' if offline() else ' and could not be downloaded'}; "
            f"run `swapbench fetch --model {path}` (or `hf download {path}`) where there is network, "
            "or pass --model PIPELINE_DIR") from None


def pipeline_folder(model: ModelConfig | ModelSpec | str, revision: str | None = None) -> Path:
    """The folder holding a pipeline's files: the folder itself, or a hub name's snapshot in the local cache."""
    spec = ModelSpec.of(model)
    path = spec.location
    if Path(path).is_dir():
        return Path(path)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(path, revision=revision or spec.revision, local_files_only=True))


def hub_snapshot(repo: str, repo_type: str = "model", revision: str | None = None) -> Path | None:
    """The folder of ``repo``'s snapshot in the local hub cache; None when there is none. Never downloads."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo, repo_type=repo_type, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):  # ValueError: not a repo id
        return None


def model_index(model: ModelConfig | ModelSpec | str) -> dict | None:
    """``model_index.json`` of the pipeline, or None when it is not on disk."""
    try:
        folder = pipeline_folder(model)
    except Exception:  # not in the cache: hub errors come in several types
        return None
    index = folder / "model_index.json"
    return read_json(index) if index.is_file() else None


def family_of_index(index: dict, where: str) -> Family:
    from swapbench.families import for_class

    return for_class(index.get("_class_name"), where)


def family_of(model: ModelConfig | ModelSpec | str) -> Family:
    """The model family of a base pipeline, from its ``model_index.json`` (no weights are read)."""
    spec = ModelSpec.of(model)
    index = model_index(spec)
    if index is None:
        resolve_model(spec.name)  # a local problem is named first
        raise UserError(f"base model {spec.name!r} is not in the local Hugging Face cache, so its family cannot be "
                        f"read; run `swapbench fetch --model {spec.name}` where there is network")
    return family_of_index(index, spec.name)


def _dropped_parts(spec: ModelSpec) -> dict[str, None]:
    """The family's optional components that ``model_index.json`` sets to null (SD3 without its T5), passed as
    None: ``from_pretrained`` leaves a null component out only where the pipeline class declares it optional,
    and SD3's does not declare its T5 (diffusers' docs drop it with ``text_encoder_3=None, tokenizer_3=None``)."""
    index = model_index(spec)
    if not index:
        return {}
    family = family_of_index(index, spec.name)
    return {part: None for part in family.optional if part not in family.required_parts(index)}


def _has_safety_checker(spec: ModelSpec) -> bool:
    index = model_index(spec) or {}
    return any(isinstance(index.get(part), list) and index[part][0] for part in SAFETY_PARTS)


def _variant_words(spec: ModelSpec) -> str:
    extras = [f"revision {spec.revision}" if spec.revision else "", f"variant {spec.variant}" if spec.variant else ""]
    extras = [e for e in extras if e]
    return f" ({', '.join(extras)})" if extras else ""


@dataclass
class SafetyChecker:
    """Stable Diffusion's NSFW checker, run beside sampling instead of inside it: it reports which images
    it would have blackened, and the images stay as drawn."""

    checker: Any
    processor: Any
    source: str

    @classmethod
    def load(cls, model: ModelConfig | ModelSpec | str, device: torch.device | str = "cpu") -> SafetyChecker | None:
        """The base pipeline's checker, or None when its ``model_index.json`` names none."""
        spec = ModelSpec.of(model)
        index = model_index(spec) or {}
        if not all(isinstance(index.get(p), list) and index[p][0] for p in SAFETY_PARTS):
            return None
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        folder = pipeline_folder(spec)
        checker = StableDiffusionSafetyChecker.from_pretrained(folder / "safety_checker", variant=spec.variant)
        processor = CLIPImageProcessor.from_pretrained(folder / "feature_extractor")
        return cls(checker.float().eval().to(device), processor, f"{spec.name}/safety_checker")

    def flagged(self, images: Any, batch_size: int = 32) -> list[bool]:
        """``images``: N x H x W x 3 uint8 arrays; True where SD's checker finds NSFW content."""
        import numpy as np
        import torch

        out: list[bool] = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                chunk = np.asarray(images[start:start + batch_size])
                clip_input = self.processor(list(chunk), return_tensors="pt").pixel_values
                device = next(self.checker.parameters()).device
                _, nsfw = self.checker(images=chunk.astype(np.float32) / 255, clip_input=clip_input.float().to(device))
                out += [bool(x) for x in nsfw]
        return out


# ---- judges ------------------------------------------------------------------------------------

TORCHVISION_PREFIX = "torchvision:"
"""Judge specs of torchvision ImageNet classifiers: ``torchvision:ARCH`` or ``torchvision:ARCH/WEIGHTS``."""
JUDGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""A further judge's name: the ``judge/<name>/...`` and ``agreement/<name>/...`` part of its metrics."""


@dataclass(frozen=True)
class JudgeSource:
    """Where a judge spec's weights live: a local open_clip folder, an open_clip ``ARCH/TAG`` whose
    weights come from a hub repo (``repo`` + the file names open_clip tries, in order) or a URL, or a
    torchvision classifier's weights (``url``, kept by torch.hub at ``file``)."""

    spec: str
    folder: Path | None = None
    arch: str | None = None
    tag: str | None = None
    repo: str | None = None
    filenames: tuple[str, ...] = ()
    url: str | None = None
    kind: str = "open_clip"
    """``open_clip`` or ``torchvision``."""
    file: Path | None = None
    """torchvision: where ``torch.hub`` keeps the weights (``$TORCH_HOME/hub/checkpoints/<url's file name>``)."""


def further_judges(eval_cfg: Any) -> list[tuple[str, str]]:
    """(name, spec) of every judge of ``eval.judges``, in order: ``NAME=SPEC`` names a judge, a bare
    spec is named by :func:`judge_name`. Names must differ (they prefix the judges' metrics)."""
    out: list[tuple[str, str]] = []
    for entry in eval_cfg.judges or []:
        name, sep, spec = str(entry).partition("=")
        name, spec = (name.strip(), spec.strip()) if sep else (judge_name(entry), str(entry).strip())
        if not JUDGE_NAME.fullmatch(name):
            raise UserError(f"eval.judges entry {entry!r}: judge name {name!r} must be letters, digits, '.', '_' "
                            "or '-'; write NAME=SPEC, e.g. resnet50=torchvision:resnet50")
        if name in (n for n, _ in out):
            raise UserError(f"eval.judges names two judges {name!r}; tell them apart as NAME=SPEC")
        out.append((name, spec))
    return out


def judge_name(spec: str) -> str:
    """The name a bare judge spec gets in metric names: ``torchvision:resnet50`` -> ``resnet50``, a folder
    -> its base name, ``world:savanna`` -> ``world-savanna``, ``ARCH/TAG`` -> ``ARCH-TAG``."""
    spec = spec.strip()
    if spec.startswith(TORCHVISION_PREFIX):
        spec = spec[len(TORCHVISION_PREFIX):]
    elif Path(spec).expanduser().is_dir():
        spec = Path(spec).expanduser().resolve().name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", spec).strip("-")


def resolve_judge(spec: str) -> JudgeSource:
    """``world:savanna`` / a local open_clip hub-layout folder / ``ARCH/TAG`` of open_clip's pretrained list /
    ``torchvision:ARCH[/WEIGHTS]``."""
    if spec.startswith(TORCHVISION_PREFIX):
        return resolve_torchvision(spec)
    path = resolve_world(spec, "judge")
    if Path(path).is_dir():
        if not (Path(path) / "open_clip_config.json").is_file():
            raise UserError(f"judge folder {path} has no open_clip_config.json; pass an open_clip hub-layout folder")
        return JudgeSource(spec, folder=Path(path))
    import open_clip
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    arch, _, tag = spec.partition("/")
    cfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    if arch not in open_clip.list_models() or not cfg:
        raise UserError(f"unknown judge {spec!r}; use world:savanna, a local open_clip folder, or ARCH/TAG "
                        "such as ViT-B-32/laion2b_s34b_b79k (open_clip.list_pretrained() lists them)")
    if cfg.get("hf_hub"):
        # open_clip's convention: 'org/name/' means its default file name, 'org/name/file' that file;
        # it tries the .safetensors twin of a .bin first (open_clip.pretrained.download_pretrained_from_hf).
        repo, filename = os.path.split(cfg["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        safe = HF_SAFE_WEIGHTS_NAME if filename == HF_WEIGHTS_NAME else (
            filename[:-4] + ".safetensors" if filename.endswith((".bin", ".pth")) else None)
        return JudgeSource(spec, arch=arch, tag=tag, repo=repo, filenames=tuple(f for f in (safe, filename) if f))
    return JudgeSource(spec, arch=arch, tag=tag, url=cfg.get("url"))


@dataclass
class LoadedJudge:
    model: Any
    tokenizer: Any
    mean: list[float]
    std: list[float]
    image_size: int
    name: str


def load_judge(spec: str, device: torch.device | str = "cpu") -> LoadedJudge:
    """An open_clip model and tokenizer with its preprocessing constants, from the local cache or folder."""
    import open_clip

    source = resolve_judge(spec)
    if source.kind != "open_clip":
        raise UserError(f"judge {spec} is a classifier, not a zero-shot open_clip judge: eval.judge must be one (its "
                        "image and text embeddings also give KID/FID and clip_score); list it under eval.judges, "
                        f"e.g. --set 'eval.judges=[{spec}]'")
    if source.folder is not None:
        ref = f"local-dir:{source.folder.resolve()}"
        model, _, _ = open_clip.create_model_and_transforms(ref, device=device)
        tokenizer = open_clip.get_tokenizer(ref)
    else:
        try:
            model, _, _ = open_clip.create_model_and_transforms(source.arch, pretrained=source.tag, device=device)
        except Exception as e:  # download failures surface as many exception types
            raise UserError(
                f"judge weights {spec} are not in the local cache"
                f"{' and HF_HUB_OFFLINE=1 forbids downloading them' if offline() else ' and cannot be downloaded'} "
                f"({type(e).__name__}); run `swapbench fetch --set eval.judge={spec}` where there is "
                "network, or set eval.judge to a local open_clip folder") from None
        tokenizer = open_clip.get_tokenizer(source.arch)
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    # Named by the spec the user gave ("world:savanna"), not this machine's path.
    return LoadedJudge(model.float(), tokenizer, list(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                       list(cfg.get("std", open_clip.OPENAI_DATASET_STD)), int(size), spec)


IMAGENET_CLASSES = 1000
"""The classes of a torchvision judge's weights (ImageNet-1k, torchvision's order)."""
UNSUPPORTED_CLASSIFIERS = ("googlenet", "inception_v3")
"""torchvision builds these differently when given weights (an input transform), so a model built
without weights and loaded from the file would see other pixels than torchvision's."""


def resolve_torchvision(spec: str) -> JudgeSource:
    """``torchvision:ARCH`` (its ``DEFAULT`` weights) or ``torchvision:ARCH/WEIGHTS`` (a member of its weights
    enum, e.g. ``IMAGENET1K_V1``): a torchvision ImageNet-1k classification model."""
    import torchvision

    arch, _, tag = spec[len(TORCHVISION_PREFIX):].partition("/")
    known = torchvision.models.list_models(module=torchvision.models)
    if arch not in known or arch in UNSUPPORTED_CLASSIFIERS:
        raise UserError(f"unknown judge {spec!r}: {arch!r} is not a supported torchvision ImageNet classifier; use "
                        "e.g. torchvision:resnet50 (torchvision.models.list_models(module=torchvision.models) lists "
                        f"them, except {', '.join(UNSUPPORTED_CLASSIFIERS)})")
    enum = torchvision.models.get_model_weights(arch)
    members = [m for m in enum.__members__ if m != "DEFAULT"]
    if tag and tag not in members:
        raise UserError(f"unknown judge {spec!r}: {arch} has weights {', '.join(members)} (or write "
                        f"torchvision:{arch} for DEFAULT)")
    weights = enum[tag] if tag else enum.DEFAULT
    if len(weights.meta.get("categories") or ()) != IMAGENET_CLASSES:
        raise UserError(f"judge {spec!r}: the weights {weights} do not classify the {IMAGENET_CLASSES} ImageNet-1k "
                        "classes; choose ImageNet-1k weights")
    return JudgeSource(spec, arch=arch, tag=weights.name, url=weights.url, kind="torchvision",
                       file=torch_hub_checkpoints() / os.path.basename(weights.url))



def torch_hub_checkpoints() -> Path:
    """Where ``torch.hub`` keeps downloaded weights: ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def load_torchvision(source: JudgeSource) -> tuple[Any, Any]:
    """The classifier of a torchvision judge in eval mode and its weights' own preprocessing, from the weights
    file alone (read weights-only); never downloads: ``swapbench fetch`` puts the file there."""
    import torch
    import torchvision

    if not source.file.is_file():
        raise UserError(f"judge {source.spec} needs its weights file {source.file.name}, not found at {source.file}; "
                        f"run `swapbench fetch --set 'eval.judges=[{source.spec}]'` where there is network "
                        "(or put the file there)")
    weights = torchvision.models.get_model_weights(source.arch)[source.tag]
    model = torchvision.models.get_model(source.arch, weights=None, num_classes=IMAGENET_CLASSES)
    try:
        state = torch.load(source.file, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # a wrong or corrupt file fails in torch.load or load_state_dict
        raise UserError(f"{source.file} is not the weights file of {source.spec} ({type(e).__name__}); delete it "
                        f"and run `swapbench fetch --set 'eval.judges=[{source.spec}]'`") from None
    return model.float().eval(), weights.transforms()


# ---- Inception (FID/KID features) --------------------------------------------------------------

INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
"""torch-fidelity's FID Inception-v3 weights (converted from TensorFlow's 2015-12-05 graph); torchmetrics loads
the same."""
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[1]


def inception_weights_path(explicit: str | None = None) -> Path:
    """``eval.inception_weights`` if given, else where ``torch.hub`` keeps the file: ``$TORCH_HOME/hub/checkpoints``."""
    if explicit:
        return Path(explicit).expanduser()
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
