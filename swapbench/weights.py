"""The one weights-hashing scheme: sha256 over a folder's weight and config files, memoised.

Train (the feature-cache key) and eval (the base-sample cache key, provenance) both call
:func:`weights_hash`, so an edit anywhere in a tensor (a token-embedding row, one attention
projection) changes every key that depends on it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from swapbench.io import atomic_write_text, sha256_file
from swapbench.paths import cache_dir

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
