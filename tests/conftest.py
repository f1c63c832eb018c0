import os

import pytest

# Tests must never reach a hub; everything they load is built in the test or shipped.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Caches go to a per-session temp folder, never the user's ~/.cache."""
    monkeypatch.setenv("SWAPBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "swapbench-cache"))


@pytest.fixture(scope="session")
def mini_world(tmp_path_factory):
    """A world built through the real build code with a few images and steps (untrained weights)."""
    from swapbench.world.build import BuildSettings, build_world

    out = tmp_path_factory.mktemp("worlds") / "mini"
    build_world(out, BuildSettings.mini())
    return out
