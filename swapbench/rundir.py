"""The run directory contract: what ``train`` writes and ``eval``, ``compare`` and ``gate`` read."""

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
    eval_log = property(lambda self: self.root / "eval_log.jsonl")
    """In-loop evaluations (``train.eval_every``): one ``{"step", "wall_s", "metrics", ...}`` line each."""
    resume_log = property(lambda self: self.root / "resumes.jsonl")
    """One line per ``--resume`` that changed config keys: step, time and {key: [old, new]}."""

    @property
    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint folder (``step-NNNNNNN``; ``.tmp`` ones are torn writes)."""
        ckpts = sorted(self.checkpoints.glob("step-???????"))
        return ckpts[-1] if ckpts else None

    def eval_rows(self) -> list[dict]:
        """The rows of ``eval_log.jsonl`` in step order (a line torn by a kill is dropped)."""
        from swapbench.io import read_jsonl

        rows = [r for r in read_jsonl(self.eval_log) if isinstance(r, dict) and "step" in r]
        return sorted(rows, key=lambda r: r["step"])

    def resumes(self) -> list[dict]:
        from swapbench.io import read_jsonl

        return read_jsonl(self.resume_log)

    @property
    def finished(self) -> bool:
        """Training finished: the summary is written last, after the model is exported."""
        return self.train_summary.is_file() and (self.model / "model_index.json").is_file()


def runs_under(root: str | Path) -> list[RunDir]:
    """Run directories directly under ``root`` (folders holding a config.json), finished or not."""
    root = Path(root)
    return sorted((RunDir(p) for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file()),
                  key=lambda r: r.name) if root.is_dir() else []


def looks_like_runs_root(path: str | Path) -> bool:
    """A folder of runs (``runs/``) rather than a run or a pipeline: no config.json or model_index.json
    of its own, and at least one run directory inside."""
    path = Path(path)
    return (path.is_dir() and not (path / "config.json").is_file() and not (path / "model_index.json").is_file()
            and bool(runs_under(path)))


def latest_run(runs_root: str | Path = "runs") -> RunDir:
    """The most recently finished run under ``runs_root`` (what ``swapbench eval`` uses by default)."""
    root = Path(runs_root)
    runs = runs_under(root)
    finished = [r for r in runs if r.finished]
    if not finished and runs:
        names = ", ".join(r.name for r in runs[:8]) + (f" and {len(runs) - 8} more" if len(runs) > 8 else "")
        raise UserError(f"no finished run under {root}/ (unfinished: {names}); finish one with "
                        f"`swapbench train --resume {runs[0].root}` or pass RUN_DIR")
    if not finished:
        raise UserError(f"no finished run under {root}/; train one with `swapbench train` or pass RUN_DIR")
    return max(finished, key=lambda r: r.train_summary.stat().st_mtime)
