"""One config tree for every command.

Precedence: dataclass defaults < preset file (``train/presets/<name>.yaml``) < ``--config`` file
(TOML/YAML/JSON) < ``--set a.b=v`` overrides. Unknown keys are errors that suggest close names.
Key names are public (users write them in ``--set`` and config files): add keys freely, rename none.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from swapbench.assets import asset_names, asset_path
from swapbench.edits import Edits, parse_edits
from swapbench.errors import UserError
from swapbench.samplers import SAMPLERS

WORLD = "world:savanna"
DEFAULT_SWAP_PAIRS = [["giraffe", "zebra"]]


@dataclass
class ModelConfig:
    pretrained: str = WORLD
    """Base pipeline: ``world:savanna``, a local diffusers folder, or a hub name (real presets)."""
    revision: str | None = None
    variant: str | None = None
    max_sequence_length: int | None = None
    """T5 tokens of a caption's conditioning (SD3.5, FLUX.1); None = the pipeline's own default (SD3: 256,
    FLUX.1-dev: 512, FLUX.1-schnell: 256). Training and sampling read the same length."""


@dataclass
class DataConfig:
    source: str = WORLD
    """``world:savanna``, a COCO-format root, a ``save_to_disk`` folder, a JSONL/imagefolder, or a hub name."""
    split: str = "train"
    image_root: str | None = None
    """Folder of the images a captions-only dataset names by file (COCO's ``train2017/``); None = images in the data."""
    subset_size: int = 25_000
    swap_pairs: list[list[str]] = field(default_factory=lambda: [list(p) for p in DEFAULT_SWAP_PAIRS])
    """The swaps of a run whose ``edits`` is empty (older configs); new ones write ``edits``."""
    drop_both: bool = True
    balance_ratio: float | None = 1.7
    keep_other: float = 1.0
    """Share of records naming neither swapped concept that is kept as preservation data."""
    target_share: float | None = None
    """If set, each batch draws this share from swapped-concept records (oversampling); None = uniform."""
    resolution: int = 256
    color_jitter: list[float] = field(default_factory=lambda: [0.2, 0.2, 0.2])
    hflip: bool = True
    caption: str = "random"
    """Which of an image's captions to train on each time: ``random`` or ``first``."""


@dataclass
class TrainConfig:
    trainable: str = "unet"
    """What the optimiser updates, named by the model family: ``unet`` / ``unet.cross_attention`` (attn2
    to_k/to_v only) on UNet families, ``transformer`` / ``transformer.text_attention`` on MMDiT families
    (swapbench/families/)."""
    lr: float = 2e-5
    lr_scheduler: str = "linear"
    warmup_steps: int = 200
    max_grad_norm: float = 1.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    batch_size: int = 8
    """The global batch of one optimiser micro-step: split evenly over the processes of a multi-GPU launch
    (each takes ``batch_size / N``), so N processes train on the same samples as one."""
    max_steps: int = 10_000
    grad_accum: int = 1
    loss: str = "mse"
    mixed_precision: str = "auto"
    """``auto`` (bf16 on capable GPUs, fp32 on CPU), ``no``, ``fp16`` or ``bf16``."""
    cache: bool = True
    """Cache VAE latents and text embeddings (approximate augmentation: ``cache_views`` jittered views)."""
    cache_views: int = 4
    checkpoint_every: int = 500
    log_every: int = 10
    noise_offset: float = 0.0
    """Offset noise: adds ``noise_offset * N(0, 1)`` per image and channel, as diffusers' example trainer; 0 = off."""
    weighting_scheme: str = "logit_normal"
    """Flow-matching families: how timesteps are drawn and weighted (diffusers' SD3/FLUX trainers' names):
    ``logit_normal`` or ``mode`` (timestep density), ``sigma_sqrt`` or ``cosmap`` (loss weights), ``none``."""
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    guidance: float = 1.0
    """Guidance-distilled families (FLUX.1-dev): the guidance embedding's value in training."""
    method: str = "finetune"
    """How the swap is made: one of ``CHOICES["train.method"]``, each a module of swapbench/train/methods/
    that declares what it does, edits and reads (``swapbench train --help`` lists them)."""
    lora_rank: int = 4
    lora_alpha: float = 4.0
    """LoRA scale is ``lora_alpha / lora_rank``."""
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    """UNet module names (or name suffixes, as peft matches them) that get adapters, e.g. ``attn2.to_k``."""
    uce_lambda: float = 1.0
    """UCE: weight of staying at the base weights (the ridge term)."""
    uce_edit_scale: float = 1.0
    """UCE: weight of the edit set (each edited word mapped to its stand-in's values: partner, B, anchor or "")."""
    uce_preserve_scale: float = 1.0
    """UCE: weight of the preservation set (other concepts, the empty prompt, optional data captions)."""
    uce_templates: list[str] = field(default_factory=lambda: ["{a}", "a {a}", "{plural}", "two {plural}"])
    """UCE: prompts the edit and preservation embeddings are read from (``{a}``: the concept, ``{plural}``:
    its plural, as in the eval suites)."""
    uce_positions: str = "last+after"
    """UCE: which token positions of an edit prompt are mapped: ``last+after`` (the word's last token and every
    token after it, as the UCE paper's code), ``word+after`` (all of the word's tokens too) or ``word``."""
    uce_preserve: list[str] | None = None
    """UCE: concepts whose outputs must not move; None = the eval suite's labels minus the edited concepts."""
    uce_preserve_captions: int = 0
    """UCE: this many data captions naming no edited concept join the preservation set (0 = no data pass)."""
    esd_variant: str = "x"
    """ESD: which denoiser weights train: ``x`` (the cross-attention: a UNet's every ``attn2``, an MMDiT's text
    embedders and the text side of its joint attention), ``x-strict`` (only what ``<denoiser>.cross_attention`` /
    ``.text_attention`` names: the key/value projections of the text, and an MMDiT's embedders) or ``u``
    (everything but the ``x`` set). ``train.lr`` and ``train.max_steps`` set its optimiser and length."""
    esd_eta: float = 1.0
    """ESD: the negative guidance ``eta`` of the target ``e_0 - eta (e_c - e_0)``, where ``e_0`` is the frozen base's
    prediction of the empty prompt (an edit's target or anchor instead, where it has one)."""
    eval_every: int = 0
    """Evaluate the weights in training every N steps and at the end (``eval_log.jsonl``); 0 = off."""
    eval_suite: str = "quick"
    """Suite of the in-loop evaluation (``eval.*`` sampler settings and judge apply)."""
    select: str = "last"
    """Which weights ``model/`` gets: ``last``, or ``first-passing`` (the earliest evaluated step whose
    in-loop evaluation passes the gate rules; the last step when none does)."""
    select_rules: str | None = None
    """Gate rules file ``first-passing`` checks; None = the shipped default rules (eval/gates/default.yaml)."""
    report_to: str = "none"
    """Experiment tracker through accelerate (``none``, ``tensorboard``, ``wandb``, ...); logs to RUN/trackers."""


@dataclass
class EvalConfig:
    suite: str = "default"
    judge: str = WORLD
    """``world:savanna``, a local open_clip hub-layout folder, or ``ARCH/PRETRAINED_TAG``: the primary judge, whose
    metrics carry the plain names (and the gate reads)."""
    judges: list[str] = field(default_factory=list)
    """Further judges, each ``SPEC`` or ``NAME=SPEC``: a spec ``eval.judge`` takes, or ``torchvision:ARCH[/WEIGHTS]``
    (an ImageNet classifier, e.g. ``torchvision:resnet50``). Every image gets each one's label too; their metrics
    are ``judge/<name>/...`` and their agreement with the primary ``agreement/<name>/...`` (docs/judges.md).
    Empty: the primary alone."""
    judge_classes: str | None = None
    """torchvision judges: the YAML file mapping each suite label to ImageNet-1k class indices; None = the shipped
    ``eval/judges/imagenet.yaml``."""
    sampler: str = "dpmsolver++"
    """One of ``swapbench.samplers.SAMPLERS``: dpmsolver++, ddim, euler."""
    steps: int = 20
    guidance_scale: float = 4.0
    batch_size: int = 64
    resolution: int | None = None
    """Sample size in pixels; None = the pipeline's native size."""
    seeds: int | None = None
    """Seeds per prompt; None = the suite's own number."""
    bootstrap: int = 1000
    keep_samples: int | None = None
    """Base/tuned PNG pairs kept per prompt for the report (its first N seeds); None = the suite's own number."""
    fid_features: str = "judge"
    """Features of FID/KID vs base: ``judge`` (the judge's image embeddings) or ``inception`` (torch-fidelity's
    Inception-v3 pool features, the ones FID is usually quoted with; needs the weights file, see README)."""
    inception_weights: str | None = None
    """The Inception weights file; None = ``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth``."""
    safety_checker: str = "count"
    """Stable Diffusion's NSFW checker, for bases that ship one: ``count`` (images are scored as drawn and the
    checker's flags are reported as ``safety_flagged/base`` and ``safety_flagged/tuned``) or ``off``. It never
    blackens an evaluated image."""


@dataclass
class ExportConfig:
    push_to_hub: str | None = None
    private: bool = True


@dataclass
class Config:
    preset: str = "savanna"
    name: str | None = None
    seed: int = 0
    device: str = "auto"
    output_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    edits: list[dict] = field(default_factory=list)
    """What the run edits (swapbench/edits/), each item ``{swap: [A, B]}``, ``{remap: A, to: B}``, ``{erase: A}`` or
    ``{erase: A, anchor: C}``; several at once. Empty = the swaps of ``data.swap_pairs``."""

    @property
    def edit_set(self) -> Edits:
        """The run's edits, parsed and checked (``edits``, else ``data.swap_pairs``)."""
        if self.edits and [list(p) for p in self.data.swap_pairs] != DEFAULT_SWAP_PAIRS:
            raise UserError(f"both edits and data.swap_pairs={self.data.swap_pairs} are set; give the swaps as "
                            "edits items ({swap: [A, B]}) and leave data.swap_pairs at its default")
        return parse_edits(self.edits, self.data.swap_pairs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


CHOICES: dict[str, tuple[str, ...]] = {
    "data.caption": ("random", "first"),
    # Which of these applies is the model family's to say (swapbench/families/).
    "train.trainable": ("unet", "unet.cross_attention", "transformer", "transformer.text_attention"),
    "train.weighting_scheme": ("logit_normal", "mode", "sigma_sqrt", "cosmap", "none"),
    # The methods' names; what each one is lives in its module, swapbench/train/methods/<name>.py
    # ("-" written "_"). This module sits below train and names them without importing them.
    "train.method": ("finetune", "lora", "uce", "token-swap", "esd"),
    "train.uce_positions": ("last+after", "word+after", "word"),
    "train.esd_variant": ("x", "x-strict", "u"),
    # diffusers' get_scheduler names that run from warmup_steps and max_steps alone: its
    # piecewise_constant also needs step_rules, which no config key carries.
    "train.lr_scheduler": ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                           "constant_with_warmup"),
    "train.loss": ("mse",),
    "train.select": ("last", "first-passing"),
    # accelerate's LoggerType names (less "all": a run names what it logs to).
    "train.report_to": ("none", "tensorboard", "wandb", "trackio", "comet_ml", "mlflow", "aim", "clearml", "dvclive",
                        "swanlab"),
    "train.mixed_precision": ("auto", "no", "fp16", "bf16"),
    "eval.sampler": tuple(SAMPLERS),
    "eval.fid_features": ("judge", "inception"),
    "eval.safety_checker": ("count", "off"),
}
"""Keys whose value is one of a fixed set, checked when the config is loaded (not when first used)."""


def preset_names() -> list[str]:
    return asset_names("train/presets")


def load_config(
    preset: str | None = "savanna",
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
) -> Config:
    """Resolve a config: defaults < preset < file < ``key=value`` overrides."""
    cfg = Config()
    if preset:
        names = preset_names()
        if preset not in names:
            raise UserError(f"unknown preset {preset!r}{_suggest(preset, names)}; available: {', '.join(names)}")
        apply_mapping(cfg, read_config_file(asset_path(f"train/presets/{preset}.yaml")), source=f"preset {preset}")
        cfg.preset = preset
    if config_file:
        apply_mapping(cfg, read_config_file(Path(config_file)), source=str(config_file))
    for item in overrides or []:
        key, value = parse_override(item)
        set_key(cfg, key, value, source="--set")
    cfg.edit_set  # noqa: B018 - a bad edit fails when the config loads, not at the first use
    return cfg


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans (true/false only). YAML 1.1 also reads yes/no/on/off as booleans,
    which turned ``--set train.mixed_precision=no`` into False."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))


def load_yaml(text: str) -> Any:
    """Config YAML (files and ``--set`` values): safe tags only, YAML 1.2 booleans."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


def read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"config file {path} not found; pass an existing .yaml, .toml or .json file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            data = load_yaml(text)
    except (ValueError, yaml.YAMLError) as e:
        raise UserError(f"config file {path} does not parse ({type(e).__name__}: {str(e).splitlines()[0]}); "
                        "fix its syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of sections (model, data, train, eval, export)")
    data.pop("metadata", None)
    return data


def apply_mapping(cfg: Config, mapping: dict[str, Any], source: str) -> None:
    for key, value in flatten(mapping):
        set_key(cfg, key, value, source=source)


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.lr=1e-4"`` -> ``("train.lr", 1e-4)``; the value is read as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set expects key=value, got {item!r}; e.g. --set train.lr=1e-4")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def set_key(cfg: Config, key: str, value: Any, source: str) -> None:
    node: Any = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(node)]
        if part not in names:
            prefix = ".".join(parts[:i])
            valid = [f"{prefix}.{n}" if prefix else n for n in names]
            raise UserError(f"unknown config key {key!r} (from {source}){_suggest(key, all_keys())}; "
                            f"valid here: {', '.join(valid)}")
        if i == len(parts) - 1:
            hint = typing.get_type_hints(type(node))[part]
            if dataclasses.is_dataclass(hint):
                raise UserError(f"config key {key!r} is a section; set one of its keys, "
                                f"e.g. {key}.{dataclasses.fields(hint)[0].name}=...")
            value = _coerce(value, hint, key)
            if key in CHOICES and value not in CHOICES[key]:
                raise UserError(f"config key {key!r} is {value!r}{_suggest(str(value), list(CHOICES[key]))}; "
                                f"choose one of: {', '.join(CHOICES[key])}")
            setattr(node, part, value)
        else:
            node = getattr(node, part)
            if not dataclasses.is_dataclass(node):
                raise UserError(f"config key {key!r}: {'.'.join(parts[: i + 1])} is not a section")


def all_keys(node: Any = None, prefix: str = "") -> list[str]:
    node = node if node is not None else Config()
    keys = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            keys += all_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config from ``config.json`` of a run (unknown keys are an error)."""
    cfg = Config()
    apply_mapping(cfg, data, source="config.json")
    return cfg


def flatten(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mapping -> (dotted key, leaf value) pairs, in order."""
    items = []
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            items += flatten(v, key + ".")
        else:
            items.append((key, v))
    return items


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    if not close:
        tail = word.rsplit(".", 1)[-1]
        close = [c for c in choices if c.rsplit(".", 1)[-1] == tail] or difflib.get_close_matches(
            tail, choices, n=3, cutoff=0.5
        )
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Type-check ``value`` against the field's annotation, allowing int -> float."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except UserError as e:
                errors.append(e)
        raise errors[0]
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key {key!r} expects a list, got {value!r}; e.g. {key}=[1,2]")
        return [_coerce(v, args[0], key) for v in value] if args else list(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # YAML 1.1 reads "1e-5" (no dot) as a string; users write learning rates that way.
        try:
            return float(value)
        except ValueError:
            pass
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if hint is Any or isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise UserError(f"config key {key!r} expects {getattr(hint, '__name__', hint)}, got {value!r}")


RESUMABLE = ("train.lr", "train.max_grad_norm", "train.max_steps", "train.checkpoint_every", "train.log_every",
             "train.eval_every", "train.eval_suite", "train.select", "train.select_rules", "train.report_to",
             "device", "eval.", "export.")
"""Keys ``train --resume RUN --set k=v`` may change: they leave the checkpointed state and the sample plan
valid (the plan is prefix-stable in ``train.max_steps``). A prefix ending in '.' admits a whole section."""


def apply_resume_overrides(cfg: Config, overrides: list[str]) -> dict[str, tuple[Any, Any]]:
    """Apply ``key=value`` overrides to a resumed run's config; return {key: (old, new)} of real changes.
    Keys outside :data:`RESUMABLE` are refused: they would change what the checkpoint means."""
    changes: dict[str, tuple[Any, Any]] = {}
    for item in overrides:
        key, value = parse_override(item)
        if not any(key == k or k.endswith(".") and key.startswith(k) for k in RESUMABLE):
            raise UserError(f"{key} cannot change when resuming (the checkpoint was trained with it); resumable keys: "
                            f"{', '.join(k + '*' if k.endswith('.') else k for k in RESUMABLE)}; "
                            "start a new run with --name to change it")
        set_key(copy.deepcopy(cfg), key, value, source="--set")  # unknown keys and bad values fail first
        old = _get_key(cfg, key)
        set_key(cfg, key, value, source="--set")
        new = _get_key(cfg, key)
        if new != old:
            changes[key] = (changes.get(key, (old,))[0], new)
    return changes


def _get_key(cfg: Config, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node
