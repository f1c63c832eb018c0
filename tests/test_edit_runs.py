"""The savanna world answers an erasure end to end: ``swapbench train --set 'edits=[{erase: giraffe}]' &&
swapbench eval``, then the paired gate against a weaker erasure."""

import json

import pytest

from swapbench.cli import main

ERASE = "edits=[{erase: giraffe}]"


@pytest.fixture(scope="module")
def erase_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("erase")
    for name, steps, lr in (("erase", 120, 3e-3), ("weak", 10, 1e-5)):
        assert main(["train", "--out", str(out), "--name", name, "--set", ERASE, "--set", f"train.max_steps={steps}",
                     "--set", f"train.lr={lr}", "--set", "train.checkpoint_every=0"]) == 0
        assert main(["eval", str(out / name)]) == 0
    return out


def test_an_erasure_trains_and_is_scored_with_intervals(erase_runs, capsys):
    results = json.loads((erase_runs / "erase" / "eval/results.json").read_text())
    assert results["edits"] == [{"erase": "giraffe"}] and results["swap_pairs"] == []
    metrics = results["metrics"]
    erased, kept = metrics["erase_success/giraffe"], metrics["preservation"]
    assert erased["n"] == 40 and erased["n_clusters"] == 4 and kept["n"] == 60
    assert erased["value"] >= 0.9 and kept["value"] >= 0.95  # measured 1.000 and 0.983 at 120 steps
    for entry in (erased, kept):
        assert entry["ci95"][0] <= entry["value"] <= entry["ci95"][1] < 1.0 + 1e-9 and entry["ci95"][0] > 0.5
    became = results["confusion"]["giraffe"]
    assert became["giraffe"] <= 4 and became["empty landscape"] >= 30  # erased into the scene, not another animal
    assert "mace_h" in metrics and "erased_accuracy/giraffe" in metrics
    assert main(["gate", str(erase_runs / "erase")]) == 0


def test_the_paired_gate_fails_a_run_whose_erasure_regressed(erase_runs, capsys):
    weak = json.loads((erase_runs / "weak" / "eval/results.json").read_text())["metrics"]["erase_success/giraffe"]
    assert weak["value"] < 0.5  # ten steps at a thousandth of the rate barely start it
    capsys.readouterr()
    assert main(["gate", str(erase_runs / "weak"), "--baseline", str(erase_runs / "erase")]) == 1
    assert "erase_success/giraffe" in capsys.readouterr().out
