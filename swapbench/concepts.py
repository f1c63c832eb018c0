"""Concept label sets: which eval suite a name means, and the labels (concepts) it judges between.

Low because more than the evaluation needs them: the closed-form edit (``train.method: uce``) preserves
the suite's other labels, and ``eval.suite`` is checked before any download.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from swapbench.assets import asset_names, asset_path
from swapbench.errors import UserError


def suite_path(name_or_path: str) -> Path:
    """The YAML file of a shipped suite name or a suite path; a clear error when there is none."""
    path = Path(name_or_path)
    if not path.suffix:
        names = asset_names("eval/suites")
        if name_or_path not in names:
            raise UserError(f"unknown suite {name_or_path!r}; available: {', '.join(names)}, or pass a suite YAML path")
        path = asset_path(f"eval/suites/{name_or_path}.yaml")
    if not path.is_file():
        raise UserError(f"suite file {path} not found; pass a suite name ({', '.join(asset_names('eval/suites'))}) "
                        "or a YAML path")
    return path


def suite_labels(name_or_path: str) -> list[str]:
    """The concepts the suite's judge chooses between, in the suite's order."""
    path = suite_path(name_or_path)
    try:
        return [str(x) for x in yaml.safe_load(path.read_text(encoding="utf-8"))["labels"]]
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise UserError(f"suite {path} is malformed ({type(e).__name__}: {e}); it needs labels and groups") from None
