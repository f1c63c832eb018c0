"""Read captioned images from any supported source as :class:`Records`: one record per image.

A record is ``{"image", "captions", "tokens"}``: ``image`` is a file path or an :class:`ImageRef` (a row of
a ``datasets`` table, read only when the feature cache encodes it), ``captions`` the raw strings and
``tokens`` one token list per caption (empty when the source has none). Nothing but the caption
columns of the chosen records is read before the feature cache: the dataset is subset by index first
(swapbench/data/prepare.py), so memory follows the subset, not the dataset.

Sources (``data.source``):
- ``world:savanna``: the embedded world, materialised as COCO files in the cache;
- a COCO 2017 root (``annotations/captions_<split>2017.json`` + ``<split>2017/``);
- a ``datasets.save_to_disk`` folder or a hub dataset name, in the layouts the hub serves COCO in:
  * one row per image with an ``image`` and a ``captions`` list (AKCIT/coco2017-captioning);
  * one row per caption with a ``sentences`` struct ``{tokens, raw, imgid, sentid}`` (bitmind/MS-COCO,
    the reference code's layout), grouped into images by ``cocoid`` (or ``imgid``); the per-image
    variant (bitmind/MS-COCO-unique, one struct per row) is the same schema with one row per group;
  * one row per image with a list of ``sentences`` structs, or ``caption``/``text``/``sentences_raw``;
  * captions only (phiyodr/coco2017: ``file_name``, ``coco_url``, ``captions``): the images come from
    ``data.image_root``, the COCO ``train2017/`` folder;
- a JSONL file or folder with ``metadata.jsonl`` (``file_name`` + ``text``/``caption``/``captions``).

Why the per-caption layout is grouped: an image is the unit everything downstream counts and encodes
(``data.subset_size`` images, the 1.7:1 balance in images, one latent per image and view), so every
layout means the same by those keys. The reference's both-words filter tested one caption's tokens;
for this layout it still does (``caption_filter``: a caption whose tokens name both words is dropped,
an image left with none is dropped), so grouping does not change which captions it removes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from swapbench.errors import UserError
from swapbench.loading import hub_snapshot
from swapbench.world import WORLD_PREFIX

CAPTION_KEYS = ("captions", "caption", "text", "sentences_raw")
IMAGE_KEYS = ("image", "img")
FILE_KEYS = ("file_name", "filename")
GROUP_KEYS = ("cocoid", "imgid", "image_id")


@dataclass(frozen=True)
class ImageRef:
    """Row ``row`` of a one-column table of encoded images (``Image(decode=False)``), read on demand."""

    table: datasets.Dataset
    row: int
    origin: str

    def read(self) -> dict:
        """``{"bytes", "path"}`` as ``datasets`` stores an image (read from Arrow directly: a row through
        ``Dataset.__getitem__`` costs ~5x as much in formatting, per image of every run's plan)."""
        row = self.row if self.table._indices is None else self.table._indices.column(0)[self.row].as_py()
        return self.table.data.fast_slice(row, 1).column(0).to_pylist()[0]

    def __str__(self) -> str:
        return f"row {self.row} of {self.origin}"


class Records:
    """The image records of one source: how many there are, and the chosen ones on request."""

    def __init__(self, table: datasets.Dataset, origin: str, layout: str, image: str,
                 groups: tuple[np.ndarray, np.ndarray] | None = None, image_root: Path | None = None,
                 caption_filter: bool = False):
        self.table, self.origin, self.layout = table, origin, layout
        self.image_col, self.image_root = image, image_root
        self.caption_filter = caption_filter
        # rows of record i: order[starts[i]:starts[i + 1]] (None: record i is row i)
        self.order, self.starts = groups if groups is not None else (None, None)
        self.text_cols = [c for c in table.column_names if c != image and c not in GROUP_KEYS]
        self.images = None
        if isinstance(table.features[image], datasets.Image):
            # decode=False: reading a row (any way) yields the encoded bytes, never a decoded picture
            self.images = table.select_columns([image]).cast_column(image, datasets.Image(decode=False))

    def __len__(self) -> int:
        return len(self.table) if self.starts is None else len(self.starts) - 1

    def rows_of(self, record: int) -> list[int]:
        if self.starts is None:
            return [record]
        return self.order[self.starts[record]:self.starts[record + 1]].tolist()

    def read(self, indices: Iterable[int]) -> list[dict]:
        """Records ``indices`` in that order; only their caption columns are read, images stay references."""
        indices = list(indices)
        rows_per = [self.rows_of(i) for i in indices]
        flat = [r for rows in rows_per for r in rows]
        cols = list(dict.fromkeys([*self.text_cols, *([self.image_col] if self.images is None else [])]))
        data = self.table.select_columns(cols).select(flat).to_list() if flat else []
        out, at = [], 0
        for rows in rows_per:
            part = data[at:at + len(rows)]
            at += len(rows)
            captions, tokens = [], []
            for item in part:
                c, t = _captions_and_tokens(item, self.origin)
                captions += c
                tokens += t
            out.append({"image": self._image(rows[0], part[0] if part else {}), "captions": captions, "tokens": tokens})
        return out

    def to_list(self) -> list[dict]:
        return self.read(range(len(self)))

    def _image(self, row: int, item: dict):
        if self.images is not None:
            return ImageRef(self.images, row, self.origin)
        name = item[self.image_col]
        if self.image_root is not None:
            # Karpathy-style rows name the folder (train2014/val2014) beside the file name
            sub = item.get("filepath") if self.image_col == "filename" and item.get("filepath") else ""
            return str(self.image_root / sub / name)
        return name

    def describe(self) -> dict:
        """What data_audit.json records about the layout."""
        return {"origin": self.origin, "layout": self.layout, "records": len(self), "rows": len(self.table),
                "both_words_filter": "per caption, on its tokens (as the reference code tests sentences.tokens)"
                if self.caption_filter else "per image, on its captions taken together"}


def load_records(source: str, split: str = "train", seed: int = 0, world_size: int | None = None,
                 image_root: str | None = None) -> Records:
    if source.startswith(WORLD_PREFIX):
        from swapbench.world.data import materialise

        root = materialise(seed=0, train=world_size or 25_000, val=500)
        return load_coco(root, split)
    path = Path(source)
    if path.is_dir() and (path / "annotations").is_dir():
        return load_coco(path, split)
    if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise UserError(f"{path} has no split {split!r} (has {', '.join(loaded)}); set data.split")
            loaded = loaded[split]
        return from_table(loaded, str(path), image_root)
    if path.suffix == ".jsonl" or (path.is_dir() and (path / "metadata.jsonl").is_file()):
        return load_jsonl(path if path.suffix == ".jsonl" else path / "metadata.jsonl")
    if path.exists():
        raise UserError(f"{path} is not a COCO root (annotations/), a save_to_disk folder or a JSONL file; "
                        "point --data at one of those")
    if "/" in source and not source.startswith((".", "/")):
        return from_table(load_hub(source, split), source, image_root)
    raise UserError(f"data source {source!r} not found; pass a COCO root, a save_to_disk folder, a JSONL file "
                    "or a hub dataset name")


def load_coco(root: Path, split: str) -> Records:
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
        raise UserError(f"{ann_path} is not COCO captions JSON ({type(e).__name__}: {e}); "
                        "regenerate or fix it") from None
    return Records(_table(rows), str(root), "COCO 2017 root", "image")


def load_jsonl(path: Path) -> Records:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            name = item.get("file_name") or item["image"]
        except (ValueError, KeyError, AttributeError):
            raise UserError(f"{path}:{number} is not a JSON object with file_name and text; fix that line") from None
        rows.append({"image": str(path.parent / name), "captions": _captions_of(item, f"{path}:{number}"),
                     "tokens": []})
    return Records(_table(rows), str(path), "JSONL", "image")


def load_hub(name: str, split: str) -> datasets.Dataset:
    """``load_dataset(name)``; offline, a hub-cache snapshot (``snapshot_download``, as ``swapbench fetch`` leaves
    one) is loaded as the local folder it is, since ``datasets`` offline only looks for its own prepared copy."""
    try:
        try:
            return datasets.load_dataset(name, split=split)
        except (ConnectionError, FileNotFoundError):
            snapshot = hub_snapshot(name, "dataset")
            if snapshot is None:
                raise
            return datasets.load_dataset(str(snapshot), split=split)
    except ValueError as e:
        if "split" in str(e).lower():
            raise UserError(f"dataset {name!r} has no split {split!r}; set data.split") from None
        raise _not_loadable(name, e) from None
    except Exception as e:  # hub errors come in many types; all mean the same to the user
        raise _not_loadable(name, e) from None


def _not_loadable(name: str, e: Exception) -> UserError:
    offline = " (offline: HF_HUB_OFFLINE is set)" if datasets.config.HF_HUB_OFFLINE else ""
    return UserError(f"cannot load dataset {name!r}{offline} ({type(e).__name__}); run `swapbench fetch` or "
                     f"`datasets.load_dataset({name!r})` where there is network, or pass --data DIR with a local copy")


def from_table(ds: datasets.Dataset, origin: str, image_root: str | None = None) -> Records:
    """Records over a ``datasets`` table in any of the hub's COCO layouts (see the module docstring)."""
    features = ds.features
    sentences = features.get("sentences")
    if sentences is None and not any(k in features for k in CAPTION_KEYS):
        raise UserError(f"{origin} has no caption column (looked for sentences, {', '.join(CAPTION_KEYS)}; "
                        f"has {', '.join(ds.column_names)}); point --data at a captioned dataset")
    image = next((c for c in IMAGE_KEYS if isinstance(features.get(c), datasets.Image)), None)
    root = None
    if image is None:
        names = [c for c in (*IMAGE_KEYS, *FILE_KEYS, "filepath") if _is_text(features.get(c))]
        files = [c for c in FILE_KEYS if c in names]
        if image_root is not None:
            root = Path(image_root)
            if not root.is_dir():
                raise UserError(f"data.image_root {root} is not a folder; point it at the COCO image folder "
                                "(train2017/ for the train split) that holds the dataset's images")
            image = (files or names or [None])[0]
        elif files and not [c for c in names if c not in (*FILE_KEYS, "filepath")]:
            raise UserError(f"{origin} carries no images, only their file names ({files[0]}); pass "
                            "--set data.image_root=DIR with the COCO image folder (train2017/ for the train split) "
                            "or use a dataset with an image column")
        else:
            image = next((c for c in names if c not in FILE_KEYS), None)
        if image is None:
            raise UserError(f"{origin} has no image column (looked for {', '.join((*IMAGE_KEYS, *FILE_KEYS))}; "
                            f"has {', '.join(ds.column_names)}); point --data at a dataset with images")

    keep = [c for c in ds.column_names if c in (image, "filepath", "sentences", "sentences_tokens", *CAPTION_KEYS,
                                                   *GROUP_KEYS)]
    if "captions" in keep:  # one list says it all (AKCIT also has `text`, its first caption again)
        keep = [c for c in keep if c not in ("caption", "text", "sentences_raw")]
    ds = ds.select_columns(keep)
    if isinstance(sentences, dict):  # one struct per row
        group = next((c for c in GROUP_KEYS if c in ds.column_names), None)
        groups = _groups(ds, group) if group else None
        if groups is None or len(groups[1]) - 1 == len(ds):
            layout = "row per image, one sentences struct"
        else:
            layout = f"row per caption, sentences struct, grouped by {group}"
        return Records(ds, origin, layout, image, groups, root, caption_filter=True)
    layout = ("row per image, sentences list" if sentences is not None else
              "captions only + data.image_root" if root is not None else "row per image, captions list")
    return Records(ds, origin, layout, image, None, root)


def _is_text(feature) -> bool:
    return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")


def _groups(ds: datasets.Dataset, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by ``column`` (stably: an image's captions keep their order) and where each value starts."""
    ids = np.asarray(ds.with_format("numpy")[column])
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    return order, np.r_[starts, len(ids)]


def _captions_and_tokens(item: dict, where: str) -> tuple[list[str], list[list[str]]]:
    if "sentences" in item and item["sentences"] is not None:
        sentences = item["sentences"]
        if isinstance(sentences, dict) and isinstance(sentences.get("raw"), list):  # a list of structs as columns
            sentences = [dict(zip(sentences, v, strict=True)) for v in zip(*sentences.values(), strict=True)]
        elif isinstance(sentences, dict):  # one struct per row
            sentences = [sentences]
        raw = [s.get("raw") or " ".join(s.get("tokens") or []) for s in sentences]
        return [r.strip() for r in raw], [list(s.get("tokens") or []) for s in sentences]
    captions = _captions_of(item, where)
    tokens = item.get("sentences_tokens") or []
    return captions, [list(t) for t in tokens] if len(tokens) == len(captions) else []


def _captions_of(item: dict, where: str) -> list[str]:
    for key in CAPTION_KEYS:
        if key in item and item[key] is not None:
            value = item[key]
            return [value] if isinstance(value, str) else [str(v) for v in value]
    raise UserError(f"{where}: no caption field (looked for {', '.join(CAPTION_KEYS)})")


def _table(rows: list[dict]) -> datasets.Dataset:
    if not rows:
        return datasets.Dataset.from_dict({"image": [], "captions": [], "tokens": []})
    return datasets.Dataset.from_list(rows)
