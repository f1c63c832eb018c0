"""The report's robustness sections (suite ``robust``): one per probe, with same-seed image rows."""

from __future__ import annotations

from pathlib import Path

from swapbench.eval.probes import PROBE_GROUPS

FAMILY_NOTES = {
    "capitalisation": "CLIP's tokenizer lower-cases, so these read as the word's own tokens: a control for the rest",
    "misspelling": "typos the tokenizer reads as other token sequences",
    "split": "the word written as two words",
}


def robust_sections(results: dict, eval_dir: Path, data_uri) -> dict | None:
    """Forms, trajectory and unnamed sections of ``results`` (None when the suite ran no probe)."""
    rows = [r for r in results.get("per_prompt", []) if r.get("group") in PROBE_GROUPS]
    if not rows:
        return None
    metrics, extra = results["metrics"], results.get("robust", {})
    valid = extra.get("valid_pairs", {})

    def cell(row: dict) -> dict:
        images = row.get("images", {})
        return {"seed": row["seed"], "base": data_uri(eval_dir / images["base"]) if images else None,
                "tuned": data_uri(eval_dir / images["tuned"]) if images else None, "base_label": row["base_label"],
                "tuned_label": row["tuned_label"], "success": row["success"],
                "counted": row["group"] == "unnamed" or row["base_label"] == row["concept"]}

    families = []
    for name in dict.fromkeys(r["kind"] for r in rows if r["group"] == "forms"):
        prompts: dict[str, dict] = {}
        for r in rows:
            if r["group"] == "forms" and r["kind"] == name and "images" in r:
                prompts.setdefault(r["prompt"], {"prompt": r["prompt"], "concept": r["concept"], "cells": []})[
                    "cells"].append(cell(r))
        families.append({"name": name, "metric": metrics.get(f"robust/forms/{name}"),
                         "note": FAMILY_NOTES.get(name, ""), "valid": valid.get(f"forms/{name}"),
                         "forms": [f for f in extra.get("forms", []) if f["family"] == name],
                         "prompts": list(prompts.values())})

    trajectory = [r for r in rows if r["group"] == "trajectory"]
    levels = list(dict.fromkeys((r["probe"], r["level"]) for r in trajectory))
    curve = [{"name": n, "metric": metrics[n], "valid": valid.get(f"trajectory/{kind}/{level:g}"),
              "label": f"img2img strength {level:g}" if kind == "img2img" else f"handover after {level:g} of the steps"}
             for kind, level in levels
             for n in [f"robust/trajectory/{level:g}" if kind == "img2img" else f"robust/trajectory/handover/{level:g}"]
             if n in metrics]
    starts: dict[tuple[str, int], dict] = {}
    for r in trajectory:
        if "images" not in r:
            continue
        start = starts.setdefault((r["prompt"], r["seed"]), {
            "prompt": r["prompt"], "seed": r["seed"], "concept": r["concept"], "base_label": r["base_label"],
            "start": data_uri(eval_dir / r["images"]["base"]), "counted": r["base_label"] == r["concept"], "cells": []})
        start["cells"].append({"label": f"{r['level']:g}" if r["probe"] == "img2img" else f"handover {r['level']:g}",
                               "image": data_uri(eval_dir / r["images"]["tuned"]), "tuned_label": r["tuned_label"],
                               "success": r["success"]})

    unnamed_prompts: dict[str, dict] = {}
    for r in rows:
        if r["group"] == "unnamed" and "images" in r:
            unnamed_prompts.setdefault(r["prompt"], {"prompt": r["prompt"], "concept": "no label", "cells": []})[
                "cells"].append(cell(r))
    counts = extra.get("unnamed")
    return {"families": families, "trajectory": {"curve": curve, "starts": list(starts.values()),
                                                  "info": extra.get("trajectory", {})},
            "unnamed": {"tv": metrics.get("robust/unnamed/tv"), "changed": metrics.get("robust/unnamed/changed"),
                        "counts": counts, "prompts": list(unnamed_prompts.values())}}
