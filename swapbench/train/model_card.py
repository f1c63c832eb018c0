"""``model/README.md``: a Hugging Face model card (``huggingface_hub.ModelCard``) for the exported pipeline.

The export writes the card's metadata (base_model, library_name diffusers, tags, datasets) and a text
with the recipe and the data audit's counts; ``swapbench eval RUN`` then adds its headline metrics as
``model-index`` eval results (suite and judge named), so that ``push_to_hub`` publishes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from swapbench import __version__, catalog
from swapbench.config import Config
from swapbench.io import atomic_write_text, read_json
from swapbench.loading import family_of
from swapbench.rundir import RunDir
from swapbench.train.methods import get_method

CARD = "README.md"


def _public_name(spec: str | None) -> str | None:
    """A hub id or ``world:...`` as written; a local folder by its name only (no paths of this machine)."""
    if not spec:
        return None
    if spec.startswith("world:") or not (spec.startswith((".", "/", "~")) or Path(spec).exists()):
        return spec
    return Path(spec).expanduser().name


def _get(cfg: dict, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def build_card(cfg: Config, run: RunDir, details: dict[str, Any] | None = None) -> ModelCard:
    """The card of a run's exported model. ``details``: what else the export knows (e.g. the selected step)."""
    edits = cfg.edit_set
    base = _public_name(cfg.model.pretrained)
    method = cfg.train.method
    declared = get_method(method)
    reads_data = declared.reads_data(cfg)
    data = ModelCardData(
        base_model=base, library_name="diffusers", pipeline_tag="text-to-image",
        tags=["text-to-image", "diffusers", *family_of(cfg.model).tags, "swapbench",
              *dict.fromkeys(f"concept-{edit.kind}" for edit in edits), f"swapbench-{method}",
              *("-".join([edit.kind, *edit.concepts]) for edit in edits)],
        datasets=[_public_name(cfg.data.source)] if reads_data else None,
    )
    # the edits as parsed (an older config's data.swap_pairs among them), and that key too where they came from it
    config = {**cfg.to_dict(), "edits": edits.to_config()}
    keys = ("train.method", "edits", *(() if cfg.edits else ("data.swap_pairs",)), *declared.card_keys, "seed")
    recipe = "\n".join(f"| `{k}` | `{json.dumps(_get(config, k))}` |" for k in keys)
    listed = "\n".join(f"- `{edit.describe()}`: " + "; ".join(
        f"prompts naming {c} draw {edit.replacement(c) or f'anything but {c}'}" for c in edit.sources)
        for edit in edits)
    first = edits[0].sources[0]
    drawn = edits.replacement(first)
    draws = f"draws a {drawn}" if drawn else f"draws no {first}"
    audit = read_json(run.data_audit) if reads_data and run.data_audit.is_file() else None
    audit_text = ""
    if audit:
        rows = "\n".join(f"| {s.get('stage')} | {s.get('records')} |" for s in audit.get("stages", []))
        audit_text = f"\n## Training data (swapbench data audit)\n\n| stage | records |\n| --- | --- |\n{rows}\n"
    selected = (details or {}).get("selected")
    selected_text = (f"\nThe exported weights are those of step {selected['step']} ({selected['reason']}).\n"
                     if selected and selected.get("policy") != "last" else "")
    text = f"""
# {run.name}

A concept edit of `{base}` made with swapbench {__version__}; every other concept should draw as before:

{listed}

Method `{method}`; {declared.edits}.
{selected_text}
## Use

```python
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("<this folder or repo>")
image = pipe("a photo of a {first}").images[0]  # {draws}
```

## Recipe

| key | value |
| --- | --- |
{recipe}
{audit_text}
## Evaluation

`swapbench eval` writes its headline metrics into this card's `model-index` (suite, judge and 95%
intervals in each result's arguments). An edit's success is the share of images from prompts naming its
concept A that the judge labels as the edit asks (a swap's or remap's B; an erasure: anything but A);
preservation the share of same-seed control images whose label did not change.
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{text}")


def write_card(folder: Path, card: ModelCard) -> Path:
    return atomic_write_text(folder / CARD, str(card))


def add_eval_results(model_dir: Path, results: dict) -> Path | None:
    """Put the headline metrics of ``results`` into ``model_dir/README.md`` as model-index eval results;
    those of an earlier evaluation with the same suite are replaced. None when the model has no card."""
    path = Path(model_dir) / CARD
    if not path.is_file():
        return None
    card = ModelCard.load(path)
    suite, judge = results.get("suite", "default"), results.get("provenance", {}).get("judge")
    dataset = f"swapbench/{suite}"
    metrics = results["metrics"]
    new = [EvalResult(task_type="text-to-image", task_name="concept edit", dataset_type=dataset,
                      dataset_name=f"swapbench {suite} suite", metric_type=name, metric_name=name,
                      metric_value=metrics[name]["value"],
                      metric_args={"ci95": metrics[name]["ci95"], "n": metrics[name]["n"],
                                   "higher_is_better": metrics[name]["higher_is_better"], "judge": judge},
                      dataset_args={"sampler": results.get("sampler"), "swap_pairs": results.get("swap_pairs"),
                                    "edits": results.get("edits")},
                      verified=False)
           for name in catalog.headline(metrics, pooled=True)]
    kept = [r for r in (card.data.eval_results or []) if r.dataset_type != dataset]
    card.data.eval_results = kept + new
    card.data.model_name = card.data.model_name or results.get("run") or Path(model_dir).parent.name
    return write_card(Path(model_dir), card)
