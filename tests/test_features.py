"""The sample plan and the plan-driven feature cache: what is encoded, and that it never changes a number."""

import pytest
import torch

from swapbench.config import DataConfig
from swapbench.data.sources import load_records
from swapbench.families import for_pipeline
from swapbench.loading import load_pipeline
from swapbench.train.features import Encoders, FeatureCache, ShardStore
from swapbench.train.plan import draw_plan


def test_plan_is_seeded_prefix_stable_and_keeps_the_target_share():
    counts = [5] * 30 + [1] * 70  # 30 target records with five captions, 70 preservation records with one
    long = draw_plan(counts, 30, 0.75, 40, 8, 4, "random", seed=7)
    short = draw_plan(counts, 30, 0.75, 10, 8, 4, "random", seed=7)
    assert torch.equal(long.record[:10], short.record) and torch.equal(long.caption[:10], short.caption)
    assert not torch.equal(draw_plan(counts, 30, 0.75, 10, 8, 4, "random", seed=8).record, short.record)
    assert ((long.record < 30).sum(dim=1) == 6).all()  # round(0.75 * 8) target samples in every batch
    assert long.caption[long.record >= 30].eq(0).all() and long.caption.max() == 4
    assert set(long.view.flatten().tolist()) == {0, 1, 2, 3}
    assert draw_plan(counts, 30, 0.75, 10, 8, 4, "first", seed=7).caption.eq(0).all()
    uniform = draw_plan(counts, 30, None, 200, 8, 1, "random", seed=0)
    assert 0.2 < (uniform.record < 30).float().mean() < 0.4 and uniform.view.eq(0).all()


@pytest.fixture(scope="module")
def parts(tiny_pipeline, coco_root):
    pipe = load_pipeline(str(tiny_pipeline))
    records = load_records(str(coco_root), "train").to_list()
    return pipe, records


def _cache(parts, plan):
    pipe, records = parts
    cfg = DataConfig(resolution=32)
    encoders = Encoders(pipe, for_pipeline(pipe), "cpu", weights_key="tiny")
    return FeatureCache.for_plan(records, plan, cfg, encoders, seed=0)


def _tensors(cache, plan):
    """Every micro-batch the plan reads, as the trainer reads it."""
    batches = [cache.batch(m) for m in range(len(plan.record))]
    return torch.cat([b[0] for b in batches]), torch.cat([b[1]["text"] for b in batches])


def test_cache_encodes_only_the_plan_and_reuse_never_changes_a_number(parts, tmp_path, monkeypatch):
    counts = [len(r["captions"]) for r in parts[1]]
    first = draw_plan(counts, 20, 0.5, 3, 4, 2, "random", seed=1)
    other = draw_plan(counts, 20, 0.5, 5, 4, 2, "random", seed=2)

    monkeypatch.setenv("SWAPBENCH_CACHE", str(tmp_path / "a"))
    cold = _cache(parts, first)
    n_captions = len({parts[1][r]["captions"][c] for r, c in zip(first.record.flatten().tolist(),
                                                                 first.caption.flatten().tolist(), strict=True)})
    assert cold.encoded == len(first.pairs()) + n_captions < 2 * len(parts[1])
    warm = _cache(parts, first)
    cold_latents, cold_text = _tensors(cold, first)
    assert cold_latents.shape[0] == cold_text.shape[0] == first.record.numel()
    warm_latents, warm_text = _tensors(warm, first)
    assert warm.encoded == 0 and torch.equal(warm_latents, cold_latents) and torch.equal(warm_text, cold_text)

    # A cache filled by another plan first: shared entries were encoded in other batches, same numbers.
    monkeypatch.setenv("SWAPBENCH_CACHE", str(tmp_path / "b"))
    _cache(parts, other)
    mixed = _cache(parts, first)
    assert 0 < mixed.encoded < cold.encoded
    mixed_latents, mixed_text = _tensors(mixed, first)
    assert torch.equal(mixed_latents, cold_latents) and torch.equal(mixed_text, cold_text)


def test_shard_store_survives_reopening_and_ignores_torn_shards(tmp_path):
    store = ShardStore(tmp_path, "x")
    store.add(["a", "b"], torch.tensor([[1.0], [2.0]]))
    store.add(["c"], torch.tensor([[3.0]]))
    (tmp_path / ".x-dead.safetensors.tmp").write_bytes(b"torn")  # an interrupted write
    reopened = ShardStore(tmp_path, "x")
    assert reopened.missing(["c", "d", "a", "d"]) == ["d"]
    assert reopened.read(reopened.locate(["c", "a", "b"])).flatten().tolist() == [3.0, 1.0, 2.0]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two fresh processes that import the whole stack: ~60 s of CPU
def test_two_processes_agree_on_the_work_even_when_one_writes_before_the_other_lists(parts, tiny_pipeline, coco_root,
                                                                                      tmp_path, monkeypatch):
    """The interleaving that failed two multi-process runs in three, forced: rank 0 lists, then writes a shard,
    then rank 1 lists (and so sees fewer missing entries). Both must still read every sample's own entry."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    worker = Path(__file__).with_name("_cache_race.py")
    env = {**os.environ, "SWAPBENCH_CACHE": str(tmp_path / "shared"), "OMP_NUM_THREADS": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
           "PYTHONPATH": os.pathsep.join([str(worker.parent.parent), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, str(worker), str(tiny_pipeline), str(coco_root), str(tmp_path)],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(e[-2000:] for e in errors)

    info = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert info[1]["own_listing"]["images"] == info[0]["own_listing"]["images"] - 8  # the race really happened
    # enough entries that a list shifted by 8 splits into other chunks (each rank listing for itself loses some)
    assert info[0]["own_listing"]["images"] > FeatureCache.CHUNK_IMAGES + 8
    read = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    assert all(torch.equal(read[0][k], read[1][k]) for k in ("latents", "text"))

    counts = [len(r["captions"]) for r in parts[1]]
    monkeypatch.setenv("SWAPBENCH_CACHE", str(tmp_path / "single"))
    plan = draw_plan(counts, 20, 0.5, 12, 12, 2, "random", seed=4)
    latents, text = _tensors(_cache(parts, plan), plan)
    # fp16 entries encoded under another thread count may differ in the last bit; a wrong entry differs by far more
    assert torch.allclose(read[0]["latents"], latents, atol=2e-2) and torch.allclose(read[0]["text"], text, atol=2e-2)
