"""Edited weights made elsewhere, applied to a base pipeline: one small module per format behind :class:`WeightsFormat`.

``swapbench eval --base SPEC --weights FILE_OR_FOLDER`` scores the base pipeline with a file's weights in it,
for the shapes in which the field publishes its edited models (partial and full denoiser state dicts,
text-encoder checkpoints, diffusers and kohya LoRA files, Concept Ablation deltas, CompVis checkpoints, whole
pipeline folders). A format module declares its name, how it is recognised from the key names and what it
loads, and applies itself to the base; :func:`load_edited` reads the path once, picks the format and returns
the edited pipeline with its provenance record (``provenance.weights`` in results.json).

Reading is safe by construction: ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` go through
``torch.load(weights_only=True)`` (no code is unpickled), ``.safetensors`` through safetensors, and a folder's
safetensors files are read instead of its pickled ones when it has both. The checks every component load
makes (:func:`load_state`) are what turns a wrong file into one clear line instead of a silent partial load.
(The package is not called ``swapbench.weights``: that module is the weights-hashing scheme.)
"""

from __future__ import annotations

import importlib
import pickle
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from swapbench.errors import UserError

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

    from swapbench.families import Family
    from swapbench.loading import ModelSpec

FORMATS = ("pipeline", "concept_ablation", "kohya_lora", "lora", "compvis", "text_encoder", "denoiser")
"""The format modules, in the order auto-detection tries them: the most specific key patterns first, the
plain state dicts (whose keys are only checked against the base's own) last."""

PICKLED = (".pt", ".pth", ".bin", ".ckpt")
SAFETENSORS = ".safetensors"
WRAPPERS = ("state_dict", "model", "module")
"""Keys under which training scripts nest the state dict (Lightning's ``state_dict``, ``{'model': ...}``)."""
DATA_PARALLEL = "module."
"""The prefix ``torch.nn.DataParallel`` / DDP puts on every key of a wrapped model's state dict."""


@dataclass
class Weights:
    """What a ``--weights`` path holds, read once."""

    path: Path
    content: dict
    """Tensors by key with the wrappers unwrapped; Concept Ablation's delta keeps its nesting (``{'unet': {...}}``)."""
    sha256: str
    files: list[Path] = field(default_factory=list)
    """The weight files read (none for a pipeline folder)."""

    @property
    def is_pipeline(self) -> bool:
        return (self.path / "model_index.json").is_file()

    def keys(self) -> list[str]:
        """Every key, a nested one as ``outer/inner``."""
        out: list[str] = []
        for key, value in self.content.items():
            out += [f"{key}/{inner}" for inner in value] if isinstance(value, dict) else [key]
        return out

    def tensors(self, part: str | None = None) -> dict[str, torch.Tensor]:
        """The flat state dict (of the nested ``part``); a value that is not a tensor is a bad file."""
        import torch

        content = self.content if part is None else self.content[part]
        bad = next((k for k, v in content.items() if not isinstance(v, torch.Tensor)), None)
        if bad is not None:
            where = f"{part}/{bad}" if part else bad
            raise UserError(f"--weights {self.path}: {where} is a {type(content[bad]).__name__}, not a tensor; "
                            f"pass a state dict (keys seen: {sample(self.keys())})")
        return content


@dataclass
class Base:
    """The base pipeline the weights go into, loaded only when a format needs it (a pipeline folder does not)."""

    spec: ModelSpec | str

    @cached_property
    def family(self) -> Family:
        from swapbench.loading import family_of

        return family_of(self.spec)

    @cached_property
    def pipe(self) -> DiffusionPipeline:
        from swapbench.loading import load_pipeline

        return load_pipeline(self.spec, safety_checker=False)

    @property
    def name(self) -> str:
        return self.spec if isinstance(self.spec, str) else self.spec.name


class WeightsFormat(ABC):
    """One published checkpoint format: how it is recognised and how it goes into a base pipeline."""

    name: ClassVar[str]
    """The ``--weights-format`` value."""
    detection: ClassVar[str]
    """How auto-detection recognises it, in words (``--help`` and the README's format table)."""
    loads: ClassVar[str]
    """What it loads into the base, in words."""

    @abstractmethod
    def detects(self, weights: Weights, base: Base) -> bool:
        """Whether ``weights`` is in this format (from the key names; a state dict also from the base's names)."""

    @abstractmethod
    def apply(self, weights: Weights, base: Base) -> tuple[DiffusionPipeline, dict[str, dict]]:
        """The pipeline to evaluate (the base's, edited) and what each component received."""


def get_format(name: str) -> WeightsFormat:
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}").FORMAT


def all_formats() -> list[WeightsFormat]:
    return [get_format(name) for name in FORMATS]


def format_names() -> list[str]:
    """The ``--weights-format`` choices besides ``auto``, in detection order (declarations only, no heavy imports)."""
    return [name.replace("_", "-") for name in FORMATS]


def load_edited(base_spec: ModelSpec | str, path: str | Path, name: str = "auto") -> tuple[DiffusionPipeline, dict]:
    """The base pipeline with the weights at ``path`` applied (format ``name``, or detected) and the record
    results.json keeps as ``provenance.weights``."""
    weights = read(Path(path))
    base = Base(base_spec)
    fmt = detect(weights, base) if name == "auto" else get_format(name)
    pipe, loaded = fmt.apply(weights, base)
    return pipe, {"format": fmt.name, "path": str(weights.path), "sha256": weights.sha256,
                  "files": [f.name for f in weights.files], "base": base.name, "loaded": loaded}


def detect(weights: Weights, base: Base) -> WeightsFormat:
    for fmt in all_formats():
        if fmt.detects(weights, base):
            return fmt
    raise UserError(f"--weights {weights.path}: unknown format (keys seen: {sample(weights.keys())}); known: "
                    f"{', '.join(format_names())} (see --weights-format)")


# ---- reading ---------------------------------------------------------------------------------------

def read(path: Path) -> Weights:
    """A pipeline folder as it is; a file's or a folder's weight files as one unwrapped state dict."""
    from swapbench.io import sha256_file
    from swapbench.weights import weights_hash

    if not path.exists():
        raise UserError(f"--weights {path} does not exist")
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return Weights(path, {}, weights_hash(path))
        files = _weight_files(path)
        content: dict = {}
        for f in files:
            content.update(_read_file(f))
        return Weights(path, unwrap(content), weights_hash(path), files)
    if path.suffix not in (SAFETENSORS, *PICKLED):
        raise UserError(f"--weights {path}: not a weights file (expected {SAFETENSORS} or {', '.join(PICKLED)}) "
                        "or a folder")
    return Weights(path, unwrap(_read_file(path)), sha256_file(path), [path])


def _weight_files(folder: Path) -> list[Path]:
    """The folder's top-level weight files; its safetensors ones alone when it has any."""
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix in (SAFETENSORS, *PICKLED))
    safe = [f for f in files if f.suffix == SAFETENSORS]
    if not files:
        raise UserError(f"--weights {folder} holds no weights file ({SAFETENSORS} or {', '.join(PICKLED)}) and no "
                        "model_index.json; pass a weights file, a folder holding one, or a pipeline folder")
    return safe or files


def _read_file(path: Path) -> dict:
    if path.suffix == SAFETENSORS:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError) as e:
            raise UserError(f"--weights {path} is not a readable safetensors file ({e})") from None
    import torch

    try:
        # weights_only: a checkpoint that needs more than tensors and plain containers is refused, not executed
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--weights {path} cannot be read with torch.load(weights_only=True) ({first}); swapbench "
                        "never unpickles code: re-save it as a plain state dict or as safetensors") from None
    if not isinstance(obj, dict):
        raise UserError(f"--weights {path} holds a {type(obj).__name__}, not a state dict")
    return obj


def unwrap(obj: dict) -> dict:
    """The state dict inside ``{'state_dict': ...}`` / ``{'model': ...}`` / ``{'module': ...}`` (repeatedly), without
    the ``module.`` prefix data-parallel training leaves on every key."""
    import torch

    while not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if obj and all(isinstance(k, str) and k.startswith(DATA_PARALLEL) for k in obj):
        obj = {k[len(DATA_PARALLEL):]: v for k, v in obj.items()}
    return obj


def sample(keys: Any, n: int = 3) -> str:
    """A few key names for a message."""
    keys = list(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(str(k) for k in keys[:n]) + more if keys else "none"


# ---- the checks of every component load ----------------------------------------------------------------

def module_keys(module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` under the key names ``module`` has now. A transformers model renames checkpoint keys while
    it loads (transformers 5's CLIP text encoder dropped the ``text_model.`` prefix its older files carry); the
    same renamings are applied here, from transformers' own conversion mapping and by its loader's rule (a
    key the module already has stays as it is). diffusers models take their keys as they are."""
    from transformers import PreTrainedModel

    if not isinstance(module, PreTrainedModel):
        return tensors
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightRenaming, rename_source_key

    renamings = [t for t in get_model_conversion_mapping(module) if isinstance(t, WeightRenaming)]
    own = module.state_dict()
    out = {}
    for key, tensor in tensors.items():
        renamed = key if key in own else rename_source_key(key, renamings, [], module.base_model_prefix, own)[0]
        out[renamed] = tensor
    return out


def fits(weights: Weights, module: torch.nn.Module) -> bool:
    """Whether every key of a flat state dict starts with one of the module's own top-level names (the first
    component of its state-dict keys: ``down_blocks``, ``embeddings``, ...)."""
    import torch

    content = weights.content
    if not content or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in content.items()):
        return False
    names = {k.split(".", 1)[0] for k in module.state_dict()}
    return all(k.split(".", 1)[0] in names for k in module_keys(module, content))


def problem(module: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str, part: str) -> str | None:
    """Why ``tensors`` cannot go into ``module`` as a (partial) state dict, or None when they can.

    In this order: nothing of the module is covered; a shape differs (the file is for another base); a key
    is not one of the module's (a ``strict=False`` load would drop it without a word). Keys naming one of its
    non-persistent buffers (``position_ids`` in older transformers' CLIP files) are not weights and are left out."""
    tensors = module_keys(module, tensors)
    own = module.state_dict()
    found = [k for k in tensors if k in own]
    if not found:
        return (f"{where} covers none of the base's {part}: none of its {len(tensors)} tensors is one of its weights "
                f"(keys such as {sample(tensors)}); is it made for another base model?")
    for k in found:
        if tuple(tensors[k].shape) != tuple(own[k].shape):
            return (f"{where} does not fit the base's {part}: {k} is {list(tensors[k].shape)} in the file but "
                    f"{list(own[k].shape)} in the base; is it made for another base model? (--base)")
    buffers = {name for name, _ in module.named_buffers()}
    outside = [k for k in tensors if k not in own and k not in buffers]
    if outside:
        return (f"{where} has {len(outside)} key{'s' if len(outside) > 1 else ''} outside the base's {part} (such as "
                f"{outside[0]}); a partial load would drop {'them' if len(outside) > 1 else 'it'} silently; is it made "
                "for another base model?")
    return None


def load_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str, part: str) -> dict:
    """Checks (:func:`problem`), then copies ``tensors`` into ``module``; returns what it loaded."""
    message = problem(module, tensors, where, part)
    if message:
        raise UserError(message)
    tensors = module_keys(module, tensors)
    own = module.state_dict()
    found = {k: v for k, v in tensors.items() if k in own}
    module.load_state_dict(found, strict=False)
    record = {"tensors": len(found), "of": len(own), "load": "strict" if len(found) == len(own) else "partial",
              "dtypes": sorted({str(v.dtype).removeprefix("torch.") for v in found.values()})}
    if len(found) < len(tensors):
        record["skipped_buffers"] = len(tensors) - len(found)
    return record
