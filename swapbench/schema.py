"""results.json: the schema version and the swap pairs a results file was scored on.

``SCHEMA_VERSION`` is the one constant that ``swapbench eval`` stamps into every file and that the
readers (report, compare, gate) check, so the writer and the readers cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SCHEMA_VERSION = 1


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


def swap_directions(results: dict[str, Any]) -> list[str]:
    """``["giraffe->zebra", "zebra->giraffe", ...]``: both directions of every swapped pair, in order."""
    return [f"{a}->{b}" for a, b in directions(swap_pairs(results))]


def directions(swap_pairs: Sequence[Sequence[str]]) -> list[tuple[str, str]]:
    """Both directions of every swap pair, in order: ``[(giraffe, zebra), (zebra, giraffe), ...]``."""
    return [d for a, b in swap_pairs for d in ((a, b), (b, a))]


def partners(swap_pairs: Sequence[Sequence[str]]) -> dict[str, str]:
    """Each swapped concept's partner: ``{giraffe: zebra, zebra: giraffe}``."""
    return dict(directions(swap_pairs))
