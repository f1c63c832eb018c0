"""The rehearsal benchmarks run end to end at a tiny size (slow: each starts fresh processes)."""

import json
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
