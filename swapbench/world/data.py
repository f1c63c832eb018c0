"""Materialise the world's COCO-format dataset, cached by (generator version, seed, sizes)."""

from __future__ import annotations

import shutil
from pathlib import Path

from swapbench.errors import UserError
from swapbench.io import atomic_write_json, read_json
from swapbench.paths import cache_dir
from swapbench.progress import progress_bar
from swapbench.world import generator as gen


def materialise(seed: int = 0, train: int = 25_000, val: int = 2_500, out: str | Path | None = None) -> Path:
    """Write (or reuse) the dataset; returns its root. A finished root has ``annotations/.complete``."""
    key = {"generator_version": gen.GENERATOR_VERSION, "seed": seed, "train": train, "val": val, "size": gen.IMAGE_SIZE}
    root = Path(out) if out else cache_dir("world-data", f"v{gen.GENERATOR_VERSION}-seed{seed}-train{train}-val{val}")
    marker = root / "annotations" / ".complete"
    if marker.is_file() and read_json(marker).get("key") == key:
        return root
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write the world dataset to {root} ({e.strerror}); pass a writable --out") from None
    for split in ("train", "val"):
        shutil.rmtree(root / f"{split}2017", ignore_errors=True)
    with progress_bar() as bar:
        tasks = {split: bar.add_task(f"world data: {split}", total=n, info="")
                 for split, n in (("train", train), ("val", val))}
        hashes = gen.write_coco(root, seed, {"train": train, "val": val},
                                progress=lambda split, done, n: bar.update(tasks[split], completed=done))
    atomic_write_json(marker, {"key": key, "annotations_sha256": hashes})
    return root
