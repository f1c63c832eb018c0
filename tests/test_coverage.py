"""The shipped 95% intervals cover at the shipped suites' shapes (benchmarks/interval_coverage.py).

Every metric of the default and quick suites has a shape (its prompts and their seeds, read from the
suite files by the suite loader and the scorer); each interval kind is simulated at every shape its
metrics have, with a prompt effect, and must hold the true value in at least ``FLOOR`` of the draws
up to Monte-Carlo error: a coverage is a share of ``reps`` draws, so a true coverage of 0.93 reads
below ``FLOOR - 2 SE`` in about 2% of seeds, and the draws are seeded, so the verdict is fixed.
"""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import interval_coverage as ic  # noqa: E402

from swapbench.eval import metrics as M  # noqa: E402
from swapbench.eval import stats  # noqa: E402

FLOOR = 0.93
ROW_REPS, FEATURE_REPS = 400, 150
SUITES = ("default", "quick")


def _lowest_allowed(reps: int) -> float:
    return FLOOR - 2 * math.sqrt(FLOOR * (1 - FLOOR) / reps)


@pytest.fixture(scope="module")
def shapes():
    return ic.shipped_shapes(SUITES)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_shapes_are_the_suites_own(shapes):
    # default: 4 swap prompts per direction x 10 seeds, 8 controls x 6, 2 per control concept
    assert {(10,) * 4, (10,) * 8, (6,) * 8, (6, 6), (2,) * 16, (3,) * 8} <= shapes["share"]
    assert (2,) * 8 in shapes["KID null"] and (6,) * 8 in shapes["KID null"]  # quick's and default's controls
    assert shapes["mean"] == shapes["paired mean"] == {(6,) * 8, (2,) * 8}


@pytest.mark.parametrize("kind", ["share", "paired share", "mean", "paired mean"])
def test_row_intervals_cover_at_every_shipped_shape(kind, shapes):
    cells = [ic.KINDS[kind][1](sizes, ROW_REPS, 1) for sizes in sorted(shapes[kind])]
    low = [c.to_dict() for c in cells if c.coverage("after") < _lowest_allowed(ROW_REPS)]
    assert not low, low


@pytest.mark.parametrize("kind", ["KID null", "KID drift"])
def test_kid_covers_at_the_shipped_control_shapes(kind, shapes):
    cells = [ic.KINDS[kind][1](sizes, FEATURE_REPS, 2) for sizes in sorted(shapes[kind])]
    assert all(c.coverage("after") >= _lowest_allowed(FEATURE_REPS) for c in cells), [
        c.to_dict() for c in cells
    ]


def test_the_base_against_itself_on_three_prompts_covers_zero():
    # 3 control prompts x 5 seeds: the prompt jackknife alone held KID's 0 far too rarely
    cell = ic.KINDS["KID null"][1]((5, 5, 5), FEATURE_REPS, 4)
    assert cell.coverage("before") < 0.85 and cell.coverage("after") >= _lowest_allowed(FEATURE_REPS), (
        cell.to_dict()
    )


def test_the_benchmark_measures_the_intervals_results_json_holds():
    gen = torch.Generator().manual_seed(0)
    sizes = (6,) * 8
    tuned, base = ic.features(gen, sizes, ic.KID_DIM, drift=True)
    clusters, index = [f"prompt {k}" for k in ic._index(sizes)], ic._index(sizes)
    spread = M.kid_spread(tuned, base, 3, index, 8)
    assert M.kid_vs_base(tuned, base, 3, clusters=clusters)["ci95"] == [M.stable(v) for v in spread.ci95]
    fid = M.fid_vs_base(tuned, base, 3, 50, clusters=clusters)
    replicates = M.bootstrap(M._fid, tuned, base, 50, 3, clusters)
    assert fid["ci95"] == [M.stable(v) for v in M.fid_interval(M._fid(tuned, base), replicates, 8)]
    # two prompts: the whole range, said in the entry
    two = M.kid_vs_base(tuned[:12], base[:12], 3, clusters=clusters[:12])
    assert two["ci95"] == [-math.inf, math.inf] and two["interval"] == stats.TOO_FEW_PROMPTS


@pytest.mark.slow
def test_every_interval_covers_from_3_to_40_prompts():
    """The benchmark's grid at the default suite's seeds per prompt, FID included (minutes)."""
    for kind in ic.KINDS:
        m = 6 if kind in ic.FEATURE_KINDS or kind.endswith("mean") else 10
        for g in (3, 4, 8, 16, 40):
            if kind in ic.FEATURE_KINDS and g * m > ic.MAX_FEATURE_ROWS[kind]:
                continue
            reps = FEATURE_REPS if kind in ic.FEATURE_KINDS else 2000
            cell = ic.KINDS[kind][1]((m,) * g, reps, 3)
            assert cell.coverage("after") >= _lowest_allowed(reps), cell.to_dict()
            assert np.isfinite(cell.width_ratio())
