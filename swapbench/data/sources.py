"""Read captioned images from any supported source into one ``datasets.Dataset``.

Columns: ``image`` (a file path, or an ``Image`` feature for hub/saved datasets), ``captions``
(list of raw strings) and ``tokens`` (list of token lists; empty when the source has none).

Sources:
- ``world:savanna``: the embedded world, materialised as COCO files in the cache;
- a COCO 2017 root (``annotations/captions_<split>2017.json`` + ``<split>2017/``);
- a ``datasets.save_to_disk`` folder or a hub name whose records carry ``sentences``
  (``[{"raw", "tokens"}]``, the HF COCO layout) or ``caption``/``captions``/``text``;
- a JSONL file or folder with ``metadata.jsonl`` (``file_name`` + ``text``/``caption``/``captions``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import datasets

from swapbench.errors import UserError
from swapbench.world import WORLD_PREFIX

CAPTION_KEYS = ("captions", "caption", "text", "sentences_raw")


def load_records(source: str, split: str = "train", seed: int = 0, world_size: int | None = None) -> datasets.Dataset:
    if source.startswith(WORLD_PREFIX):
        from swapbench.world.data import materialise

        root = materialise(seed=0, train=world_size or 25_000, val=500)
        return load_coco(root, split)
    path = Path(source)
    if path.is_dir() and (path / "annotations").is_dir():
        return load_coco(path, split)
    if path.is_dir() and (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise UserError(f"{path} has no split {split!r} (has {', '.join(loaded)}); set data.split")
            loaded = loaded[split]
        return normalise_hf(loaded, str(path))
    if path.suffix == ".jsonl" or (path.is_dir() and (path / "metadata.jsonl").is_file()):
        return load_jsonl(path if path.suffix == ".jsonl" else path / "metadata.jsonl")
    if path.exists():
        raise UserError(f"{path} is not a COCO root (annotations/), a save_to_disk folder or a JSONL file; "
                        "point --data at one of those")
    if "/" in source and not source.startswith((".", "/")):
        return load_hub(source, split)
    raise UserError(f"data source {source!r} not found; pass a COCO root, a save_to_disk folder, a JSONL file "
                    "or a hub dataset name")


def load_coco(root: Path, split: str) -> datasets.Dataset:
    ann_path = root / "annotations" / f"captions_{split}2017.json"
    if not ann_path.is_file():
        raise UserError(f"COCO annotations {ann_path} not found; set data.split or point --data at a COCO 2017 root")
    try:
        coco = json.loads(ann_path.read_text(encoding="utf-8"))
        captions: dict[int, list[str]] = defaultdict(list)
        for ann in coco["annotations"]:
            captions[ann["image_id"]].append(ann["caption"].strip())
        rows = [{"image": str(root / f"{split}2017" / im["file_name"]), "captions": captions[im["id"]], "tokens": []}
                for im in coco["images"] if captions[im["id"]]]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{ann_path} is not COCO captions JSON ({type(e).__name__}: {e}); regenerate or fix it") from None
    return datasets.Dataset.from_list(rows) if rows else _empty()


def load_jsonl(path: Path) -> datasets.Dataset:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            name = item.get("file_name") or item["image"]
        except (ValueError, KeyError, AttributeError):
            raise UserError(f"{path}:{number} is not a JSON object with file_name and text; fix that line") from None
        rows.append({"image": str(path.parent / name), "captions": _captions_of(item, f"{path}:{number}"), "tokens": []})
    return datasets.Dataset.from_list(rows) if rows else _empty()


def load_hub(name: str, split: str) -> datasets.Dataset:
    try:
        loaded = datasets.load_dataset(name, split=split)
    except Exception as e:  # hub errors come in many types; all mean the same to the user
        raise UserError(f"cannot load dataset {name!r} ({type(e).__name__}); offline, download it first with "
                        f"`datasets.load_dataset({name!r}).save_to_disk(DIR)` and pass --data DIR") from None
    return normalise_hf(loaded, name)


def normalise_hf(ds: datasets.Dataset, origin: str) -> datasets.Dataset:
    """Map HF COCO-style records (``sentences.raw``/``sentences.tokens``) onto our three columns."""
    cols = set(ds.column_names)
    image_col = next((c for c in ("image", "img", "filepath", "file_name") if c in cols), None)
    if image_col is None:
        raise UserError(f"{origin} has no image column (looked for image, img, filepath, file_name)")

    def convert(item: dict) -> dict:
        if "sentences" in item:
            sentences = item["sentences"]
            if isinstance(sentences, dict):  # a Sequence of structs arrives as a dict of lists
                sentences = [dict(zip(sentences, v, strict=True)) for v in zip(*sentences.values(), strict=True)]
            raw = [s.get("raw") or " ".join(s.get("tokens", [])) for s in sentences]
            tokens = [list(s.get("tokens", [])) for s in sentences]
        else:
            raw, tokens = _captions_of(item, origin), []
        return {"captions": raw, "tokens": tokens}

    mapped = ds.map(convert, remove_columns=[c for c in ds.column_names if c != image_col])
    return mapped.rename_column(image_col, "image") if image_col != "image" else mapped


def _captions_of(item: dict, where: str) -> list[str]:
    for key in CAPTION_KEYS:
        if key in item:
            value = item[key]
            return [value] if isinstance(value, str) else [str(v) for v in value]
    raise UserError(f"{where}: no caption field (looked for {', '.join(CAPTION_KEYS)})")


def _empty() -> datasets.Dataset:
    return datasets.Dataset.from_dict({"image": [], "captions": [], "tokens": []})
