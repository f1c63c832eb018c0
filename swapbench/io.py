"""File IO: atomic writes (a file or folder is either absent, the old version, or complete) and hashing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def atomic_write_dir(folder: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on an empty staging folder, then put it in place of ``folder``: a reader finds the
    old folder, none, or the complete new one, never a half-written one."""
    folder = Path(folder)
    tmp = staging_dir(folder)
    write(tmp)
    return replace_dir(tmp, folder)


def staging_dir(folder: str | os.PathLike, clear: bool = True) -> Path:
    """``<folder>.tmp``, where a folder is written before :func:`replace_dir`. ``clear``: empty it (a leftover of
    a killed write goes) and create it; several processes writing one folder let only one of them clear it."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if clear:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    return tmp


def replace_dir(tmp: Path, folder: str | os.PathLike) -> Path:
    """Put the complete folder ``tmp`` in place of ``folder`` (the old one, if any, is removed first)."""
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Append one JSON line and flush it to disk (logs survive a kill)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj, default=_jsonable) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    """Every complete line of a JSONL file ([] when absent); a line torn by a kill is dropped."""
    rows = []
    if Path(path).is_file():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def truncate_jsonl(path: str | os.PathLike, keep: Callable[[Any], bool]) -> None:
    """Atomically rewrite a JSONL file with only the rows ``keep`` accepts."""
    if Path(path).is_file():
        rows = [row for row in read_jsonl(path) if keep(row)]
        atomic_write_text(path, "".join(json.dumps(row, default=_jsonable) + "\n" for row in rows))


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
