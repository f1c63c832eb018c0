import json
import os

import pytest

# Tests must never reach a hub; everything they load is built in the test or shipped.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Caches go to a per-session temp folder, never the user's ~/.cache (session-scoped so that
    module- and session-scoped fixtures are isolated too)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SWAPBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "swapbench-cache"))
        yield


@pytest.fixture
def write(tmp_path):
    """Writes a results.json (a dict) or a rules file (a string) under tmp_path; returns its path."""

    def _write(name, obj):
        path = tmp_path / name
        path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
        return str(path)

    return _write


@pytest.fixture(scope="session")
def mini_world(tmp_path_factory):
    """A world built through the real build code with a few images and steps (untrained weights)."""
    from swapbench.commands.world_build import BuildSettings, build_world

    out = tmp_path_factory.mktemp("worlds") / "mini"
    build_world(out, BuildSettings.mini())
    return out


@pytest.fixture(scope="session")
def mini_flow_world(tmp_path_factory):
    """``swapbench world build --world savanna-flow --mini``: the real build code, from the shipped savanna world
    (its images, VAE and judge), a few images and steps."""
    from swapbench.cli import main

    out = tmp_path_factory.mktemp("worlds") / "mini-flow"
    assert main(["world", "build", "--world", "savanna-flow", "--mini", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """A random-weight SD-layout pipeline built in code (diffusers get_dummy_components style)."""
    import torch

    from swapbench.world import models

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny") / "pipeline"
    tokenizer = models.build_tokenizer(out.parent / "tok")
    unet = models.build_unet(latent_size=8, block_out_channels=(32, 64))
    pipe = models.assemble_pipeline(models.build_vae(32), models.build_text_encoder(), tokenizer, unet)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="session")
def coco_root(tmp_path_factory):
    """Small COCO-2017-format data written by the world generator (giraffes and zebras included)."""
    from swapbench.world import generator

    root = tmp_path_factory.mktemp("coco")
    generator.write_coco(root, seed=1, sizes={"train": 90, "val": 10})
    return root


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """`swapbench train && swapbench eval` with every default: the product's headline run (seed 0)."""
    from swapbench.cli import main

    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "--out", str(out), "--name", "default"]) == 0
    assert main(["eval", str(out / "default")]) == 0
    return out / "default"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of this test's own (the hub library reads its location at import)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    assert constants.HF_HUB_OFFLINE
    return cache
