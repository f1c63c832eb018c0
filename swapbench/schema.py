"""results.json: the schema version and the edits a results file was scored on.

``SCHEMA_VERSION`` is the one constant that ``swapbench eval`` stamps into every file and that the
readers (report, compare, gate) check, so the writer and the readers cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from swapbench.edits import Edits, parse_edits

SCHEMA_VERSION = 1
EDITED_GROUPS = ("swap", "remap", "erase", "generality", "custom")
"""Row groups whose rows may name an edited concept (and so carry its ``target``)."""


def edits(results: dict[str, Any]) -> Edits:
    """The edits an evaluation scored: ``results["edits"]``, or in files written before edits were recorded,
    the swaps of their ``swap_pairs``."""
    return parse_edits(results.get("edits") or [], swap_pairs(results))


def edit_config(results: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The edits as config items, or None for a file that records none (a base-only evaluation of old)."""
    return edits(results).to_config() if results.get("edits") or swap_pairs(results) else None


def swap_pairs(results: dict[str, Any]) -> list[tuple[str, str]]:
    """The pairs an evaluation swapped: ``results["swap_pairs"]``, or, in files written before it was
    recorded, the pairs named by their ``swap_success/A->B`` metrics."""
    recorded = results.get("swap_pairs")
    if recorded:
        return [(str(a), str(b)) for a, b in recorded]
    pairs: list[tuple[str, str]] = []
    for name in results.get("metrics", {}):
        head, _, direction = name.partition("/")
        a, arrow, b = direction.partition("->")
        if head == "swap_success" and arrow and (a, b) not in pairs and (b, a) not in pairs:
            pairs.append((a, b))
    return pairs


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """``per_prompt`` with every edited row's ``target`` (files before edits were recorded lack it: their
    swaps' partners fill it in)."""
    recorded = results.get("per_prompt") or []
    if results.get("edits") or not recorded or not swap_pairs(results):
        return recorded
    return with_targets(recorded, edits(results))


def with_targets(per_prompt: Sequence[dict[str, Any]], run_edits: Edits) -> list[dict[str, Any]]:
    """Rows with the ``target`` / ``erased`` / ``anchor`` of their concept's edit filled in where missing (rows
    written before rows carried them)."""
    out = []
    for row in per_prompt:
        edit = run_edits.of(row.get("concept", ""))
        if edit is None or row.get("group") not in EDITED_GROUPS or "target" in row or row.get("erased"):
            out.append(row)
            continue
        target = edit.target(row["concept"])
        extra = {"target": target} if target is not None else {"erased": True}
        anchor = getattr(edit, "anchor_of", lambda c: None)(row["concept"])
        out.append({**row, **extra, **({"anchor": anchor} if anchor else {})})
    return out


def directions(swap_pairs: Sequence[Sequence[str]]) -> list[tuple[str, str]]:
    """Both directions of every swap pair, in order: ``[(giraffe, zebra), (zebra, giraffe), ...]``."""
    return [d for a, b in swap_pairs for d in ((a, b), (b, a))]


def partners(swap_pairs: Sequence[Sequence[str]]) -> dict[str, str]:
    """Each swapped concept's partner: ``{giraffe: zebra, zebra: giraffe}``."""
    return dict(directions(swap_pairs))
