"""The run directory contract (DESIGN §4): what ``train`` writes and ``eval`` reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from swapbench.errors import UserError


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    config = property(lambda self: self.root / "config.json")
    data_audit = property(lambda self: self.root / "data_audit.json")
    train_log = property(lambda self: self.root / "train_log.jsonl")
    train_summary = property(lambda self: self.root / "train_summary.json")
    checkpoints = property(lambda self: self.root / "checkpoints")
    model = property(lambda self: self.root / "model")
    eval_dir = property(lambda self: self.root / "eval")
    resume_log = property(lambda self: self.root / "resumes.jsonl")
    """One line per ``--resume`` that changed config keys: step, time and {key: [old, new]}."""

    def resumes(self) -> list[dict]:
        from swapbench.io import read_jsonl

        return read_jsonl(self.resume_log)

    @property
    def finished(self) -> bool:
        """Training finished: the summary is written last, after the model is exported."""
        return self.train_summary.is_file() and (self.model / "model_index.json").is_file()


def latest_run(runs_root: str | Path = "runs") -> RunDir:
    """The most recently finished run under ``runs_root`` (what ``swapbench eval`` uses by default)."""
    root = Path(runs_root)
    finished = [RunDir(p) for p in root.iterdir() if p.is_dir() and RunDir(p).finished] if root.is_dir() else []
    if not finished:
        raise UserError(f"no finished run under {root}/; train one with `swapbench train` or pass RUN_DIR")
    return max(finished, key=lambda r: r.train_summary.stat().st_mtime)
