"""The one weights-hashing scheme: sha256 over a folder's weight and config files, memoised.

Train (the feature-cache key) and eval (the base-sample cache key, provenance) both call
:func:`weights_hash`, so an edit anywhere in a tensor (a token-embedding row, one attention
projection) changes every key that depends on it. :func:`model_hash` applies it to what a model
spec loads, a hub name included.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from swapbench.io import atomic_write_text, sha256_file
from swapbench.loading import ModelSpec, pipeline_folder
from swapbench.paths import cache_dir

if TYPE_CHECKING:
    from swapbench.config import ModelConfig

HASHED_SUFFIXES = (".safetensors", ".bin", ".json", ".txt")


def weights_hash(folder: str | Path) -> str:
    """sha256 over every weight/config/vocab file under ``folder`` (path + content digest).

    A file's digest is memoised by its resolved path, size and mtime, so hashing a 4 GB pipeline
    costs one read the first time and a few ``stat`` calls afterwards."""
    folder = Path(folder)
    memo_dir = cache_dir("weights-hash")
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.suffix not in HASHED_SUFFIXES or not f.is_file():
            continue
        stat = f.stat()
        memo = memo_dir / hashlib.sha256(f"{f.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
        if memo.is_file():
            digest = memo.read_text()
        else:
            digest = sha256_file(f)
            atomic_write_text(memo, digest)  # concurrent ranks and runs share the memo
        h.update(f"{f.relative_to(folder)}:{digest}".encode())
    return h.hexdigest()


def model_hash(model: ModelConfig | ModelSpec | str) -> str:
    """The hash of what a model spec loads: :func:`weights_hash` of its folder (for a hub name, the
    snapshot of its revision in the local cache), combined with the weights variant when one is set.

    A hub snapshot keeps every variant's files side by side, so the variant must be part of the key."""
    spec = ModelSpec.of(model)
    digest = weights_hash(pipeline_folder(spec))
    if spec.variant is None:
        return digest
    return hashlib.sha256(f"{digest}:variant={spec.variant}".encode()).hexdigest()
