"""Evaluation cost: a first eval vs a second eval of another model against the same base.

Three evals share one fresh sample cache: (1) the token-embedding oracle (giraffe/zebra rows of the
text encoder exchanged, so no training is needed) against the world base — base and tuned halves are
both sampled; (2) the base model scored against itself, which finds every base sample cached;
(3) the oracle again, standing in for "another run against the same base": only its tuned half is
sampled. The ratio is (3) / (1), default suite. Run on an idle machine:

    python benchmarks/eval_speed.py
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from swapbench.cli import main as cli
from swapbench.world import resolve


def oracle(out: Path) -> Path:
    pipe = StableDiffusionPipeline.from_pretrained(resolve("world:savanna", "pipeline"), torch_dtype=torch.float32)
    ids = [pipe.tokenizer(w, add_special_tokens=False).input_ids[0] for w in ("giraffe", "zebra")]
    emb = pipe.text_encoder.get_input_embeddings().weight.data
    emb[ids] = emb[list(reversed(ids))].clone()
    pipe.save_pretrained(out)
    return out


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    assert cli(argv) == 0
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SWAPBENCH_CACHE"] = str(Path(tmp) / "cache")
        model = oracle(Path(tmp) / "oracle")
        first = timed(["eval", str(model), "--base", "world:savanna", "--out", str(Path(tmp) / "e1")])
        second = timed(["eval", "--model", "base", "--out", str(Path(tmp) / "e2")])
        third = timed(["eval", str(model), "--base", "world:savanna", "--out", str(Path(tmp) / "e3")])
    print(json.dumps({"suite": "default", "first_eval_s": round(first, 1),
                      "second_eval_same_base_s": round(third, 1), "ratio": round(third / first, 3),
                      "base_only_eval_s": round(second, 1)}, indent=2))


if __name__ == "__main__":
    main()
