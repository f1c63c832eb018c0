"""Loop-free methods end to end: load the base, apply the method's edit, write the model and its summary.

Apart from the method interface (``swapbench.train.methods``), which declares what a method is and
must not import what drives it.
"""

from __future__ import annotations

import time
from typing import Any

from swapbench.config import Config
from swapbench.rundir import RunDir
from swapbench.train.methods import Method


def run_edit(method: Method, cfg: Config, run: RunDir, started: float) -> dict[str, Any]:
    """Load the base pipeline, apply ``method.edit``, write ``model/`` and ``train_summary.json``.

    ``started``: when the command started (the summary's ``wall_s`` is the whole command, as for training).
    """
    import torch

    from swapbench.devices import resolve_device, version_info
    from swapbench.io import atomic_write_json
    from swapbench.loading import load_pipeline
    from swapbench.progress import console
    from swapbench.train.export import save_pipeline
    from swapbench.train.model_card import build_card

    setup_started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    pipe = load_pipeline(cfg.model).to(device)
    edit_started = time.perf_counter()
    details = method.edit(pipe, cfg, run)
    export_started = time.perf_counter()
    save_pipeline(pipe, run.model, card=build_card(cfg, run))
    done = time.perf_counter()
    summary = {
        "status": "finished", "method": method.name, "wall_s": round(done - started, 2),
        "startup_s": round(setup_started - started, 2), "setup_s": round(edit_started - setup_started, 2),
        "edit_s": round(export_started - edit_started, 2), "export_s": round(done - export_started, 2),
        "steps": 0, **details, **version_info(device),
    }
    atomic_write_json(run.train_summary, summary)
    console.print(f"{method.name}: model written in {summary['wall_s']:.1f} s (start-up and imports "
                  f"{summary['startup_s']:.1f} s, loading {summary['setup_s']:.1f} s, edit {summary['edit_s']:.1f} s, "
                  f"export {summary['export_s']:.1f} s)")
    return summary
