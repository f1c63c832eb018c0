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

from swapbench import __version__
from swapbench.config import Config
from swapbench.io import atomic_write_text, read_json
from swapbench.rundir import RunDir

CARD = "README.md"
LOOP_KEYS = ("train.trainable", "train.lr", "train.lr_scheduler", "train.warmup_steps", "train.batch_size",
             "train.max_steps", "train.grad_accum", "train.mixed_precision", "data.resolution", "data.subset_size",
             "data.balance_ratio", "data.target_share", "data.drop_both")
RECIPE_KEYS = {
    "finetune": LOOP_KEYS,
    "lora": (*LOOP_KEYS[1:], "train.lora_rank", "train.lora_alpha", "train.lora_dropout", "train.lora_targets"),
    "uce": ("train.uce_lambda", "train.uce_edit_scale", "train.uce_preserve_scale", "train.uce_templates",
            "train.uce_positions", "train.uce_preserve", "train.uce_preserve_captions"),
    "token-swap": (),
}
"""The config keys a card's recipe table shows, per method (after the method, the pairs and the seed)."""
HEADLINE = ("swap_success", "preservation", "generality", "specificity", "kid_vs_base")
"""Eval results the card carries, after one per swap direction."""


FROZEN = {"finetune": "the VAE and text encoder are the base model's, the UNet is tuned",
          "lora": "the VAE and text encoder are the base model's, LoRA adapters are merged into the UNet",
          "uce": "the UNet's cross-attention key/value projections are edited in closed form, all else is the base model",
          "token-swap": "the text encoder's token-embedding rows of the pair are exchanged, all else is the base model"}


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
    pairs = [tuple(p) for p in cfg.data.swap_pairs]
    base = _public_name(cfg.model.pretrained)
    method = cfg.train.method
    uses_data = method in ("finetune", "lora")
    data = ModelCardData(
        base_model=base, library_name="diffusers", pipeline_tag="text-to-image",
        tags=["text-to-image", "diffusers", "stable-diffusion", "swapbench", "concept-swap", f"swapbench-{method}",
              *(f"swap-{a}-{b}" for a, b in pairs)],
        datasets=[_public_name(cfg.data.source)] if uses_data else None,
    )
    config = cfg.to_dict()
    keys = ("train.method", "data.swap_pairs", *RECIPE_KEYS.get(method, LOOP_KEYS), "seed")
    recipe = "\n".join(f"| `{k}` | `{json.dumps(_get(config, k))}` |" for k in keys)
    swap = ", ".join(f"{a} <-> {b}" for a, b in pairs)
    audit = read_json(run.data_audit) if uses_data and run.data_audit.is_file() else None
    audit_text = ""
    if audit:
        rows = "\n".join(f"| {s.get('stage')} | {s.get('records')} |" for s in audit.get("stages", []))
        audit_text = f"\n## Training data (swapbench data audit)\n\n| stage | records |\n| --- | --- |\n{rows}\n"
    selected = (details or {}).get("selected")
    selected_text = (f"\nThe exported weights are those of step {selected['step']} ({selected['reason']}).\n"
                     if selected and selected.get("policy") != "last" else "")
    text = f"""
# {run.name}

A concept swap of `{base}` made with swapbench {__version__}:
the prompts naming {swap} draw each other's concept; every other concept should draw as before.
Method `{method}`; {FROZEN.get(method, FROZEN['finetune'])}.
{selected_text}
## Use

```python
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("<this folder or repo>")
image = pipe("a photo of a {pairs[0][0]}").images[0]  # draws a {pairs[0][1]}
```

## Recipe

| key | value |
| --- | --- |
{recipe}
{audit_text}
## Evaluation

`swapbench eval` writes its headline metrics into this card's `model-index` (suite, judge and 95%
intervals in each result's arguments). Swap success is the share of images from prompts naming A that
the judge labels B; preservation the share of same-seed control images whose label did not change.
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{text}")


def write_card(folder: Path, card: ModelCard) -> Path:
    return atomic_write_text(folder / CARD, str(card))


def add_eval_results(model_dir: Path, results: dict) -> Path | None:
    """Put the headline metrics of ``results`` into ``model_dir/README.md`` as model-index eval results;
    those of an earlier evaluation with the same suite are replaced. None when the model has no card."""
    from swapbench import schema

    path = Path(model_dir) / CARD
    if not path.is_file():
        return None
    card = ModelCard.load(path)
    suite, judge = results.get("suite", "default"), results.get("provenance", {}).get("judge")
    dataset = f"swapbench/{suite}"
    metrics = results["metrics"]
    names = [HEADLINE[0], *(f"swap_success/{d}" for d in schema.swap_directions(results)), *HEADLINE[1:]]
    new = [EvalResult(task_type="text-to-image", task_name="concept swap", dataset_type=dataset,
                      dataset_name=f"swapbench {suite} suite", metric_type=name, metric_name=name,
                      metric_value=metrics[name]["value"],
                      metric_args={"ci95": metrics[name]["ci95"], "n": metrics[name]["n"],
                                   "higher_is_better": metrics[name]["higher_is_better"], "judge": judge},
                      dataset_args={"sampler": results.get("sampler"), "swap_pairs": results.get("swap_pairs")},
                      verified=False)
           for name in names if name in metrics]
    kept = [r for r in (card.data.eval_results or []) if r.dataset_type != dataset]
    card.data.eval_results = kept + new
    card.data.model_name = card.data.model_name or results.get("run") or Path(model_dir).parent.name
    return write_card(Path(model_dir), card)
