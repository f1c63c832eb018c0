"""The rehearsal benchmarks run end to end at a tiny size (slow: each starts fresh processes)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.slow
def test_gpu_rehearsal_runs_both_modes_at_tiny_width(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from gpu_rehearsal import rehearse

    result = rehearse("tiny", images=48, steps=2, warmup=1, work=tmp_path)
    cached, uncached = result["modes"]["cached-bf16"], result["modes"]["uncached-fp32"]
    assert cached["img_per_s"] > 0 and uncached["img_per_s"] > 0
    assert cached["unet_parameters"] == uncached["unet_parameters"] > 1_000_000
    assert cached["cache_entries_10k"] > 48 and cached["projected_10k_steps_h"] > 0
    assert result["speedup_cached_bf16_vs_uncached_fp32"] > 0


@pytest.mark.slow
def test_scale_rehearsal_memory_is_flat_in_max_steps(tmp_path):
    """4x the steps reads 4x the plan; peak RSS may not follow (the features stay on disk)."""
    out = subprocess.run([sys.executable, str(BENCHMARKS / "scale_rehearsal.py"), "--images", "300",
                          "--max-steps", "20,80", "--loop-steps", "2", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    assert "| 80 | 640 |" in out
    ratio = float(out.split('"peak_rss_ratio_last_vs_first": ')[1].split(",")[0])
    assert ratio < 1.1, out


@pytest.mark.slow
def test_data_scale_memory_is_flat_in_dataset_rows(tmp_path):
    """Four times the rows, the same subset: peak RSS may not follow (the subset is drawn before reading)."""
    out = subprocess.run([sys.executable, str(BENCHMARKS / "data_scale.py"), "--rows", "600,2400", "--subsets", "200",
                          "--steps", "5", "--workdir", str(tmp_path)], capture_output=True, text=True,
                         check=True).stdout
    assert "| 2,400 | 200 |" in out
    ratio = json.loads(out.strip().splitlines()[-1])["peak_rss_ratio_largest_vs_smallest"]["200"]
    assert ratio < 1.1, out


@pytest.mark.slow
def test_gate_calibration_simulation_measures_level_and_power(monkeypatch):
    """The simulated calibration drives the real scorer and gate: null pairs pass, a large drop fails."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from gate_calibration import simulate

    rows = {label: (n, paired, overlap) for label, n, paired, overlap in simulate(3, seed=0)}
    assert rows["null: same model twice (false alarms)"] == (3, 0, 0)
    assert rows["swap -1.5 probit"][1] >= 2 and rows["swap -1.5 probit"][1] >= rows["swap -0.8 probit"][1]
    assert simulate(1, seed=5) == simulate(1, seed=5)  # seeded


def test_scale_rehearsal_feature_cache_of_sd15_at_its_real_shapes(tmp_path):
    """--family: the bytes a caption and a view take in the cache's own shards, and the preset plan's reads."""
    out = tmp_path / "cache.json"
    table = subprocess.run([sys.executable, str(BENCHMARKS / "scale_rehearsal.py"), "--family", "sd", "--entries", "8",
                            "--reads", "2", "--json", str(out), "--workdir", str(tmp_path / "work")],
                           capture_output=True, text=True, check=True).stdout
    (row,) = json.loads(out.read_text())["families"]
    assert row["preset"] == "sd15-coco" and row["shapes"] == {"text": [77, 768], "latents": [8, 32, 32]}
    # fp16 rows plus each shard's header (its keys): 77 x 768 x 2 B a caption, 8 x 32 x 32 x 2 B a view
    assert 118_272 < row["bytes_per_caption"] < 118_272 + 400 and 16_384 < row["bytes_per_view"] < 16_384 + 400
    # 80,000 uniform draws over 25,000 images x 5 captions (x 4 views): N (1 - exp(-80,000 / N)) distinct
    plan = row["plan"]
    for reads, n in ((plan["distinct_captions"], 125_000), (plan["distinct_views"], 100_000)):
        assert abs(reads / (n * (1 - math.exp(-80_000 / n))) - 1) < 0.01
    assert plan["cache_gb"] == round((plan["distinct_captions"] * row["bytes_per_caption"]
                                      + plan["distinct_views"] * row["bytes_per_view"]) / 1e9, 2)
    (run,) = row["runs"]
    assert run["entries"] == 8 and run["write_peak_rss_mb"] >= run["baseline_rss_mb"]
    assert row["vs_sd15"] == {"bytes_per_caption": 1.0, "bytes_per_view": 1.0, "cache_gb": 1.0}
    assert "| sd15-coco | 77 x 768 | - | 8 x 32 x 32 |" in table


def test_scale_rehearsal_shapes_are_each_presets_real_ones(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from scale_rehearsal import FAMILY_PRESETS, cache_shapes, t5_tokens

    from swapbench.config import load_config

    shapes = {family: cache_shapes(family, load_config(preset).data.resolution, t5_tokens(family, load_config(preset)))
              for family, preset in FAMILY_PRESETS.items()}
    assert shapes == {
        "sd": {"text": [77, 768], "latents": [8, 32, 32]},
        "sdxl": {"text": [77, 2048], "pooled": [1280], "latents": [8, 64, 64]},
        "sd3": {"text": [77 + 77, 4096], "pooled": [2048], "latents": [32, 64, 64]},
        "flux": {"text": [77, 4096], "pooled": [768], "latents": [32, 64, 64]},
    }
    unset = ["model.max_sequence_length=null"]  # the pipelines' own T5 lengths
    assert (t5_tokens("sd3", load_config("sd35-coco", overrides=unset)),
            t5_tokens("flux", load_config("flux-coco", overrides=unset))) == (256, 512)
