"""eval.fid_features=inception: torchmetrics' Inception-v3 on torch-fidelity's weight file, found in TORCH_HOME."""

import json

import numpy as np
import pytest
import torch
from _cli import assert_one_line_error

from swapbench.cli import main
from swapbench.loading import INCEPTION_FILE

BASE_QUICK = ["eval", "--model", "base", "--suite", "quick", "--set", "eval.seeds=1", "--set", "eval.steps=2",
              "--set", "eval.fid_features=inception"]


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A TORCH_HOME holding torch-fidelity's file name with random weights at the real architecture."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Untrained(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # keep PyTorch's random init
            return None

    home = tmp_path_factory.mktemp("torch-home")
    torch.save({}, home / "empty.pth")
    torch.manual_seed(0)
    net = Untrained("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(home / "empty.pth"))
    target = home / "hub" / "checkpoints" / INCEPTION_FILE
    target.parent.mkdir(parents=True)
    torch.save(net.state_dict(), target)
    return home


def test_missing_weights_name_the_file_and_where_it_goes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    code = main([*BASE_QUICK, "--out", str(tmp_path / "e")])
    assert_one_line_error(capsys, code, INCEPTION_FILE, str(tmp_path / "hub" / "checkpoints"), "eval.inception_weights")
    assert not (tmp_path / "e" / "results.json").exists()
    assert main(["fetch", "--check", "--set", "eval.fid_features=inception", "--json"]) == 2
    rows = {r["kind"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["inception"] == {**rows["inception"], "present": False,
                                 "where": str(tmp_path / "hub" / "checkpoints" / INCEPTION_FILE)}


def test_inception_features_are_named_and_vanish_between_identical_sets(torch_home, tmp_path, monkeypatch, capsys):
    from swapbench.eval.inception import InceptionFeatures

    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    extract = InceptionFeatures()
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    features = extract(images)
    assert features.shape == (3, 2048) and torch.isfinite(features).all()
    assert torch.equal(extract(images), features) and not torch.allclose(features[0], features[1])

    assert main([*BASE_QUICK, "--out", str(tmp_path / "e")]) == 0
    results = json.loads((tmp_path / "e/results.json").read_text())
    assert results["features"].startswith("Inception-v3 pool3") and INCEPTION_FILE in results["features"]
    fid, kid = results["metrics"]["fid_vs_base"], results["metrics"]["kid_vs_base"]
    assert "Inception" in fid["description"] and "Inception" in kid["description"]
    assert abs(fid["value"]) < 1e-3 and fid["n"] == 8  # the base against itself: the same features
    # an explicit file path works the same
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "elsewhere"))
    weights = torch_home / "hub" / "checkpoints" / INCEPTION_FILE
    assert main(["fetch", "--check", "--set", "eval.fid_features=inception",
                 "--set", f"eval.inception_weights={weights}"]) == 0


def test_fid_with_fewer_samples_than_dimensions_matches_torchmetrics():
    """The sample-space Frechet distance (taken when n < d, as with Inception features) is the same number
    as torchmetrics' d x d computation."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    from swapbench.eval import metrics as M

    g = torch.Generator().manual_seed(0)
    tuned = torch.randn(20, 512, generator=g, dtype=torch.float64)
    base = 1.3 * torch.randn(24, 512, generator=g, dtype=torch.float64) + 0.1
    reference = FrechetInceptionDistance(feature=M._Identity(512), normalize=False, sync_on_compute=False)
    reference.update(base, real=True)
    reference.update(tuned, real=False)
    assert M._fid(tuned, base) == pytest.approx(float(reference.compute()), rel=1e-6)
    assert abs(M._fid(base, base)) < 1e-9
