"""What a config needs on disk before it runs: the base pipeline, the dataset, the judge and the
Inception weights, each checked offline against the standard caches and fetched into them.

``swapbench fetch`` fills the caches where there is network; ``swapbench fetch --check`` and the
pre-flight of ``swapbench train`` only look. Presence means "the loader will find it offline": a hub
pipeline needs its snapshot with every component its family reads and its ``model_index.json`` names,
each with its config and weights (of ``model.variant``; every shard of a sharded one), a hub
dataset its files in the hub cache or in the ``datasets`` cache, an open_clip judge one of the weight
files open_clip loads, a torchvision judge its weights file in torch.hub's checkpoint folder, the
Inception weights the file torch-fidelity's loader looks for.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from swapbench.config import Config
from swapbench.errors import UserError
from swapbench.loading import (
    INCEPTION_FILE,
    INCEPTION_URL,
    WORLD_PREFIX,
    ModelSpec,
    further_judges,
    hub_snapshot,
    inception_weights_path,
    is_hub_name,
    offline,
    resolve_judge,
    resolve_model,
    world_dir,
)


@dataclass(frozen=True)
class Artifact:
    kind: str
    """``pipeline``, ``dataset``, ``images``, ``judge`` or ``inception``."""
    name: str
    key: str
    """The config key that names it (what to change to use another one)."""
    needed_by: tuple[str, ...]


@dataclass
class Status:
    artifact: Artifact
    present: bool
    where: str
    size: int | None = None
    missing: list[str] = field(default_factory=list)
    """What is absent, when only part of it is there (component files of a pipeline)."""


def needed(cfg: Config, *, reads_data: bool, train: bool = True, evaluate: bool = True) -> list[Artifact]:
    """The artifacts ``swapbench train`` (``train``) and ``swapbench eval`` (``evaluate``) read for ``cfg``.
    ``reads_data``: whether ``cfg``'s method reads the dataset (its ``Method.reads_data``; the command asks
    the method, which sits above this module)."""
    users = tuple(u for u, on in (("train", train), ("eval", evaluate)) if on)
    out = [Artifact("pipeline", cfg.model.pretrained, "model.pretrained", users)]
    if train and reads_data:
        out.append(Artifact("dataset", cfg.data.source, "data.source", ("train",)))
        image_root = getattr(cfg.data, "image_root", None)
        if image_root:
            out.append(Artifact("images", image_root, "data.image_root", ("train",)))
    if evaluate:
        out.append(Artifact("judge", cfg.eval.judge, "eval.judge", ("eval",)))
        out += [Artifact("judge", spec, "eval.judges", ("eval",)) for _, spec in further_judges(cfg.eval)]
        if getattr(cfg.eval, "fid_features", "judge") == "inception":
            out.append(Artifact("inception", cfg.eval.inception_weights or INCEPTION_FILE, "eval.inception_weights",
                                ("eval",)))
    return out


# ---- checking ----------------------------------------------------------------------------------

def check(artifact: Artifact, cfg: Config) -> Status:
    """Is ``artifact`` where its loader will look, offline? Never downloads."""
    return {"pipeline": _check_pipeline, "dataset": _check_dataset, "images": _check_folder,
            "judge": _check_judge, "inception": _check_inception}[artifact.kind](artifact, cfg)


def check_all(cfg: Config, *, reads_data: bool, train: bool = True, evaluate: bool = True) -> list[Status]:
    return [check(a, cfg) for a in needed(cfg, reads_data=reads_data, train=train, evaluate=evaluate)]


def _check_pipeline(a: Artifact, cfg: Config) -> Status:
    spec = ModelSpec.of(cfg.model)
    try:
        location = resolve_model(spec.name)
    except UserError as e:
        return Status(a, False, spec.name, missing=[str(e)])
    if Path(location).is_dir():
        gaps = pipeline_gaps(Path(location), spec.variant, spec.name)
        return Status(a, not gaps, _shown(location, spec.name), _du(Path(location)), gaps)
    folder = hub_snapshot(location, "model", spec.revision)
    if folder is None:
        return Status(a, False, str(_repo_cache(location, "model")))
    gaps = pipeline_gaps(folder, spec.variant, spec.name)
    return Status(a, not gaps, str(folder), _du(folder), gaps)


def pipeline_gaps(folder: Path, variant: str | None = None, where: str | None = None) -> list[str]:
    """Files a diffusers pipeline folder lacks for ``from_pretrained(variant=...)``: ``model_index.json``, a
    component folder or its config, or (for model components) weights of the variant, every shard a
    sharded component's index names included. The components are what the pipeline's family needs
    (:meth:`Family.required_parts`: denoiser, VAE, scheduler, every tokenizer and text encoder the index does
    not leave out as optional) and whatever else
    ``model_index.json`` names (SD's safety checker). ``where``: how an unsupported pipeline is named."""
    from swapbench.io import read_json
    from swapbench.loading import family_of_index

    index_file = folder / "model_index.json"
    if not index_file.is_file():
        return ["model_index.json"]
    index = read_json(index_file)
    named = [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[0]]
    family = family_of_index(index, where or str(folder))
    gaps = []
    for part in dict.fromkeys([*named, *family.required_parts(index)]):  # SD3 may set its T5 to null
        sub = folder / part
        if part not in named:
            gaps.append(f"{part} (null or absent in model_index.json)")
        elif not sub.is_dir():
            gaps.append(f"{part}/ (no folder)")
        else:
            files = {f.name for f in sub.iterdir() if f.is_file()}  # a dangling snapshot link is no file
            if not any(f.endswith(".json") for f in files):
                gaps.append(f"{part}/ (no config)")
            elif "config.json" in files:  # a model component; tokenizers and schedulers hold no weights
                gaps += _weight_gaps(part, files, variant, sub)
    return gaps


def _weight_gaps(part: str, files: set[str], variant: str | None, sub: Path) -> list[str]:
    """What model component ``part`` (folder ``sub`` holding ``files``) lacks of its weights: with a shard
    index of the variant (safetensors preferred, as the loaders prefer it), every shard its ``weight_map``
    names; otherwise one weight file of the variant."""
    from swapbench.io import read_json

    indexes = sorted((f for f in files if _is_index(f, variant)), key=lambda f: ".safetensors." not in f)
    if indexes:
        shards = sorted(set(read_json(sub / indexes[0])["weight_map"].values()))
        return [f"{part}/{shard}" for shard in shards if shard not in files]
    if any(_is_weight(f, variant) for f in files):
        return []
    return [f"{part}/ weights{f' ({variant})' if variant else ''}"]


def _is_weight(name: str, variant: str | None) -> bool:
    if not name.endswith((".safetensors", ".bin")) or ".index." in name:
        return False
    if variant:  # model.fp16.safetensors, model.fp16-00001-of-00002.safetensors, legacy model-00001-of-00002.fp16.bin
        return f".{variant}." in name or f".{variant}-" in name
    return len(name.split(".")) == 2  # model.safetensors, diffusion_pytorch_model-00001-of-00002.safetensors


def _is_index(name: str, variant: str | None) -> bool:
    """A shard index of the variant: ``model.safetensors.index.json``; with a variant
    ``model.safetensors.index.fp16.json`` (or the legacy ``model.safetensors.fp16.index.json``)."""
    _, dot, ext = name.partition(".")
    if not dot or not ext.startswith(("safetensors.", "bin.")):
        return False
    kind = ext.split(".")[0]
    if variant:
        return ext in (f"{kind}.index.{variant}.json", f"{kind}.{variant}.index.json")
    return ext == f"{kind}.index.json"


def _check_dataset(a: Artifact, cfg: Config) -> Status:
    source = cfg.data.source
    if source.startswith(WORLD_PREFIX):
        world_dir()  # the world's generator writes the data; its absence is a one-line error
        return Status(a, True, f"{source} (generated from the world's seed)", None)
    path = Path(source).expanduser()
    if path.exists():
        return Status(a, True, _shown(path, source), _du(path))
    if not is_hub_name(source):
        return Status(a, False, source, missing=["not a local path or a hub dataset name"])
    folder = hub_snapshot(source, "dataset")
    if folder is not None and any(f.is_file() for f in folder.rglob("*")):
        return Status(a, True, str(folder), _du(folder))
    prepared = prepared_dataset_dir(source, _datasets_cache())
    if prepared is not None:
        return Status(a, True, str(prepared), _du(prepared))
    return Status(a, False, str(_repo_cache(source, "dataset")))


def prepared_dataset_dir(name: str, cache: Path) -> Path | None:
    """The folder ``datasets`` prepared hub dataset ``name`` into under ``cache``
    (``<namespace>___<snake_case name>/<config>/<version>/<hash>/``), or None when it has not."""
    from datasets.naming import camelcase_to_snakecase

    namespace, _, dataset = name.partition("/")
    folder = Path(cache) / f"{namespace}___{camelcase_to_snakecase(dataset)}"
    return folder if any(p.is_file() for p in folder.glob("*/*/*/dataset_info.json")) else None


def _check_folder(a: Artifact, cfg: Config) -> Status:
    path = Path(a.name).expanduser()
    return Status(a, path.is_dir(), str(path), _du(path) if path.is_dir() else None)


def _check_judge(a: Artifact, cfg: Config) -> Status:
    try:
        source = resolve_judge(a.name)
    except UserError as e:
        return Status(a, False, a.name, missing=[str(e)])
    if source.folder is not None:
        return Status(a, True, _shown(source.folder, a.name), _du(source.folder))
    if source.file is not None:
        present = source.file.is_file()
        return Status(a, present, str(source.file), source.file.stat().st_size if present else None)
    if source.repo:
        from huggingface_hub import try_to_load_from_cache

        for filename in source.filenames:
            hit = try_to_load_from_cache(source.repo, filename)
            if isinstance(hit, str):
                return Status(a, True, hit, os.path.getsize(hit))
        return Status(a, False, str(_repo_cache(source.repo, "model") / f"snapshots/*/{source.filenames[0]}"))
    target = Path("~/.cache/clip").expanduser() / os.path.basename(source.url or "")
    return Status(a, target.is_file(), str(target), target.stat().st_size if target.is_file() else None)


def _check_inception(a: Artifact, cfg: Config) -> Status:
    path = inception_weights_path(cfg.eval.inception_weights)
    return Status(a, path.is_file(), str(path), path.stat().st_size if path.is_file() else None)


# ---- fetching ----------------------------------------------------------------------------------

def fetch(artifact: Artifact, cfg: Config, hint: str = "") -> Status:
    """Download ``artifact`` into its standard cache (no-op when present); returns its new status.
    ``hint``: another way out, appended to the message of a failure."""
    status = check(artifact, cfg)
    if status.present:
        return status
    a = artifact
    unreachable = hub_unreachable() if _from_hub(a) else None
    if unreachable:
        raise UserError(f"cannot download {a.kind} {a.name}: the Hub does not answer ({unreachable}); check the "
                        f"network, or set HF_HUB_OFFLINE=1 and point {a.key} at a local copy{hint}")
    try:
        if a.kind == "pipeline" and is_hub_name(cfg.model.pretrained):
            from diffusers import DiffusionPipeline

            DiffusionPipeline.download(cfg.model.pretrained, revision=cfg.model.revision, variant=cfg.model.variant)
        elif a.kind == "dataset" and is_hub_name(cfg.data.source):
            from huggingface_hub import snapshot_download

            snapshot_download(cfg.data.source, repo_type="dataset")
        elif a.kind == "judge" and resolve_judge(a.name).kind == "torchvision":
            import torch

            source = resolve_judge(a.name)
            source.file.parent.mkdir(parents=True, exist_ok=True)
            # torch.hub's file names carry the first digits of the file's sha256: a corrupt download fails here
            prefix = torch.hub.HASH_REGEX.search(source.file.name)
            torch.hub.download_url_to_file(source.url, str(source.file), prefix.group(1) if prefix else None)
        elif a.kind == "judge" and resolve_judge(a.name).arch:
            import open_clip

            source = resolve_judge(a.name)
            open_clip.download_pretrained(open_clip.get_pretrained_cfg(source.arch, source.tag))
        elif a.kind == "inception":
            import torch

            path = inception_weights_path(cfg.eval.inception_weights)
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(INCEPTION_URL, str(path))
        else:
            return status  # a local path: nothing to download
    except UserError:
        raise
    except Exception as e:  # network, auth and not-found errors come in many types
        raise UserError(f"cannot download {a.kind} {a.name} "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                        f"check the network and the name ({a.key}){hint}") from None
    return check(artifact, cfg)


def _from_hub(a: Artifact) -> bool:
    if a.kind in ("pipeline", "dataset"):
        return is_hub_name(a.name)
    return a.kind == "judge" and resolve_judge(a.name).repo is not None


def hub_unreachable() -> str | None:
    """Why the Hub does not answer one request (None when it does). Asked before a download, whose own
    retries take about 25 s per file to give up when there is no network."""
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except Exception as e:  # DNS, connection, TLS and proxy errors come in many types
        return f"{constants.ENDPOINT}: {type(e).__name__}"
    return None


NO_EVAL_CHECK = "; or train without them and evaluate elsewhere: swapbench train --no-eval-check"
"""How ``swapbench train`` goes on without what only the evaluation reads (said where that is missing)."""


def require(cfg: Config, *, reads_data: bool, evaluate: bool = True, preset: str | None = None) -> list[Status]:
    """Pre-flight of ``swapbench train``: everything the run reads (and, with ``evaluate``, what its
    evaluation reads) must be there. Online, missing model files (pipeline, judge, Inception) are fetched
    first, so a bad name fails before any work; the dataset is left to the data loader, which reads only
    what the subset needs. Offline, one line lists what is missing."""
    statuses = check_all(cfg, reads_data=reads_data, evaluate=evaluate)
    if not offline():
        statuses = [fetch(s.artifact, cfg, _hint([s])) if not s.present and s.artifact.kind != "dataset" else s
                    for s in statuses]
    missing = [s for s in statuses if not s.present and (offline() or s.artifact.kind != "dataset"
                                                          or not is_hub_name(s.artifact.name))]
    if missing:
        raise UserError(missing_message(missing, preset or cfg.preset) + _hint(missing))
    return statuses


def _hint(statuses: list[Status]) -> str:
    return NO_EVAL_CHECK if any(s.artifact.needed_by == ("eval",) for s in statuses) else ""


def missing_message(missing: Iterable[Status], preset: str | None) -> str:
    items = "; ".join(f"{s.artifact.kind} {s.artifact.name} ({s.artifact.key}) not at {s.where}"
                      + (f": missing {', '.join(s.missing)}" if s.missing else "") for s in missing)
    fix = f"swapbench fetch --preset {preset}" if preset else "swapbench fetch"
    return (f"missing {items}; run `{fix}` (same --set/--data/--model flags) where there is network, "
            "or point the keys at local copies")


# ---- helpers -----------------------------------------------------------------------------------

def _hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _datasets_cache() -> Path:
    from huggingface_hub import constants

    return Path(os.environ.get("HF_DATASETS_CACHE") or Path(constants.HF_HOME) / "datasets")


def _repo_cache(repo: str, repo_type: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return _hub_cache() / repo_folder_name(repo_id=repo, repo_type=repo_type)


def _du(path: Path) -> int:
    """Bytes under ``path`` (hub snapshots are symlinks into blobs/: their targets are counted)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _shown(path: str | Path, spec: str) -> str:
    return spec if spec.startswith(WORLD_PREFIX) else str(path)


def human(size: int | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
