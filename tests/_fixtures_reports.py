"""A complete evaluated run directory that follows the results.json / run-directory contracts.

Outcomes are chosen (a known share of swaps and preservations succeed) and everything else is
computed by the real parts: metric entries and Wilson intervals by ``swapbench.eval.metrics``,
sample images drawn by the world generator, the config by ``swapbench.config``. Reports, compare
and gate tests read it exactly as they would read ``swapbench eval`` output.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

from swapbench.config import load_config
from swapbench.eval import metrics as M
from swapbench.io import append_jsonl, atomic_write_json
from swapbench.world.generator import CONCEPTS, CONTROLS, NEIGHBOURS, make_single

PARTNER = {"giraffe": "zebra", "zebra": "giraffe"}
SWAP_PROMPTS = ("a photo of a {}", "a {} standing in a field")
SEEDS = 5
IMAGE_SEEDS = 2  # pairs kept as PNG per prompt, like eval.keep_samples


def _share(i: int, n: int, rate: float) -> bool:
    """Deterministic outcome: the first round(rate * n) of n trials succeed."""
    return i < round(rate * n)


def _row(group: str, concept: str, prompt: str, seed: int, tuned: str, success: bool) -> dict:
    scores = {label: (0.6 if label == tuned else 0.4 / (len(CONCEPTS) - 1)) for label in CONCEPTS}
    return {"group": group, "concept": concept, "prompt": prompt, "seed": seed, "base_label": concept,
            "tuned_label": tuned, "success": success, "scores": scores}


def _rows(swap: float, preservation: float, specificity: float) -> list[dict]:
    rows = []
    for concept, partner in PARTNER.items():
        trials = [(p.format(concept), s) for p in SWAP_PROMPTS for s in range(SEEDS)]
        for i, (prompt, seed) in enumerate(trials):
            ok = _share(i, len(trials), swap)
            rows.append(_row("swap", concept, prompt, seed, partner if ok else concept, ok))
    trials = [(c, s) for c in CONTROLS for s in range(SEEDS)]
    for i, (concept, seed) in enumerate(trials):
        ok = _share(i, len(trials), preservation)
        rows.append(_row("control", concept, f"a photo of a {concept}", seed, concept if ok else "elephant"
                         if concept != "elephant" else "cow", ok))
    for concept in PARTNER:
        prompt = f"two {concept}s on the grass"
        for seed in range(SEEDS):
            ok = _share(seed, SEEDS, swap)
            rows.append(_row("generality", concept, prompt, seed, PARTNER[concept] if ok else concept, ok))
    trials = [(c, s) for c in NEIGHBOURS for s in range(SEEDS)]
    for i, (concept, seed) in enumerate(trials):
        ok = _share(i, len(trials), specificity)
        rows.append(_row("specificity", concept, f"a photo of a {concept}", seed, concept if ok else "horse", ok))
    return rows


def _proportion(rows: list[dict], description: str, higher_is_better: bool = True) -> dict:
    metric = M.Proportion(description, higher_is_better)
    metric.update([r["success"] for r in rows])
    return metric.compute()


def _metrics(rows: list[dict], kid: float) -> dict:
    def pick(group: str, concept: str | None = None) -> list[dict]:
        return [r for r in rows if r["group"] == group and (concept is None or r["concept"] == concept)]

    out = {"swap_success": _proportion(pick("swap"), "both directions pooled")}
    for a, b in PARTNER.items():
        out[f"swap_success/{a}->{b}"] = _proportion(pick("swap", a),
                                                    "share of images from prompts naming A judged as B")
    out["preservation"] = _proportion(pick("control"), "all control pairs pooled")
    for c in CONTROLS:
        out[f"preservation/{c}"] = _proportion(pick("control", c), "same-seed tuned label == base label")
    out["generality"] = _proportion(pick("generality"), "generality: all items pooled")
    out["specificity"] = _proportion(pick("specificity"), "specificity: all items pooled")
    for c in NEIGHBOURS:
        out[f"specificity/{c}"] = _proportion(pick("specificity", c), "same-seed tuned label == base label")
    out["kid_vs_base"] = M.mean_with_ci([kid * (0.5 + i / 20) for i in range(20)], 200, 0, False,
                                        "KID between tuned and base control samples (judge features)")
    return out


def _save_png(array, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _attach_images(rows: list[dict], eval_dir: Path) -> None:
    for i, row in enumerate(rows):
        if row["seed"] >= IMAGE_SEEDS:
            continue
        folder = f"samples/{row['group']}/{row['prompt'].replace(' ', '-')}"
        row["images"] = {"base": f"{folder}/seed{row['seed']}-base.png",
                         "tuned": f"{folder}/seed{row['seed']}-tuned.png"}
        _save_png(make_single(row["base_label"], seed=row["seed"], index=i), eval_dir / row["images"]["base"])
        _save_png(make_single(row["tuned_label"], seed=row["seed"], index=i + 1), eval_dir / row["images"]["tuned"])


def results(run: str, swap: float = 0.9, preservation: float = 0.95, specificity: float = 1.0, kid: float = 2e-3,
            suite: str = "default") -> dict:
    """A schema-1 results dict (no images) with the given success shares."""
    rows = _rows(swap, preservation, specificity)
    return {
        "schema_version": 1, "run": run, "suite": suite, "swap_pairs": [["giraffe", "zebra"]],
        "created": "2026-11-25T00:00:00+00:00", "metrics": _metrics(rows, kid),
        "confusion": M.confusion([(r["concept"], r["tuned_label"]) for r in rows], list(CONCEPTS)),
        "confusion_base": M.confusion([(r["concept"], r["base_label"]) for r in rows], list(CONCEPTS)),
        "per_prompt": rows,
        "sampler": {"sampler": "dpmsolver++", "steps": 20, "guidance_scale": 4.0, "resolution": 32},
        "features": "judge image embeddings (world:savanna)",
        "labels": list(CONCEPTS),
        "timing": {"total_s": 12.5, "sampling_s": 10.0},
        "provenance": {"swapbench": "0.1.0", "git": "0" * 40, "torch": "2.14.1", "diffusers": "0.42.1",
                       "device": "cpu", "judge": "world:savanna", "base_model": "world:savanna",
                       "seeds": list(range(SEEDS)), "config_sha256": "f" * 64},
    }


def make_run(root: Path, name: str, lr: float = 3e-4, steps: int = 40, **shares) -> Path:
    """runs/<name>/ as train + eval leave it: config, audit, log, summary, model marker, eval/ with PNGs."""
    run = root / name
    cfg = load_config("savanna", None, [f"name={name}", f"output_dir={root}", f"train.lr={lr}",
                                        f"train.max_steps={steps}"])
    atomic_write_json(run / "config.json", cfg.to_dict())
    atomic_write_json(run / "data_audit.json", {
        "stages": [{"stage": "loaded", "records": 8000},
                   {"stage": "swap+filter", "records": 7800, "dropped_both_words": 200},
                   {"stage": "balance", "records": 1900, "ratio": 1.7}],
        "balance": {"ratio": 1.7, "giraffe": 1300, "zebra": 700},
        "examples": [{"before": "Two giraffes near a tree.", "after": "Two zebras near a tree."},
                     {"before": "A zebra in the sand.", "after": "A giraffe in the sand."}]})
    for step in range(10, steps + 1, 10):
        append_jsonl(run / "train_log.jsonl", {"step": step, "loss": 0.5 / step ** 0.5,
                                               "lr": lr * (1 - step / (steps + 10)), "grad_norm": 1.0 / step ** 0.25,
                                               "img_per_s": 90.0, "elapsed_s": step / 3})
    (run / "model").mkdir(parents=True, exist_ok=True)
    (run / "model" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    atomic_write_json(run / "train_summary.json", {
        "status": "finished", "wall_s": steps / 3, "steps": steps, "img_per_s": 90.0, "peak_memory_mb": 900.0,
        "device": "cpu", "final_loss": 0.5 / steps ** 0.5, "versions": {"swapbench": "0.1.0"}})
    data = results(name, **shares)
    _attach_images(data["per_prompt"], run / "eval")
    atomic_write_json(run / "eval" / "results.json", data)
    return run


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def chromium(page: Path, profile: Path, *args: str) -> str:
    """Run headless Chromium on a local page with a fresh profile; returns stdout (the DOM for --dump-dom)."""
    import subprocess

    out = subprocess.run([str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
                         capture_output=True, text=True, timeout=120, check=True)
    return out.stdout


class _Rows(HTMLParser):
    """Text of each cell of every ``<tr data-KEY=...>`` row, keyed by that attribute's value."""

    def __init__(self, attribute: str) -> None:
        super().__init__()
        self.attribute, self.rows, self.current, self.cell = attribute, {}, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and self.attribute in attrs:
            self.current = self.rows.setdefault(attrs[self.attribute], [])
        elif tag == "td" and self.current is not None:
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.current.append(" ".join(self.cell.split()))
            self.cell = None
        elif tag == "tr":
            self.current = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def table_rows(html: str, attribute: str) -> dict[str, list[str]]:
    parser = _Rows(attribute)
    parser.feed(html)
    return parser.rows


def documented_commands(markdown: Path) -> list[list[str]]:
    """Every ``swapbench ...`` invocation in a doc's code (continuations joined, shell variables -> 0)."""
    import shlex

    text = re.sub(r"\\\n\s*", " ", markdown.read_text())
    commands = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for segment in re.split(r"\s(?:&&|;)\s", line):
            match = re.match(r"\s*(?:\S+ )*?(?:-m )?swapbench(?:\.cli)? (.*)", segment)
            if match:
                shell = re.split(r"\s(?:\|\||>)\s|\s&$", match.group(1))[0]
                commands.append(shlex.split(re.sub(r'"?\$[({]?[A-Za-z_][^ "]*"?', "0", shell)))
    return commands
