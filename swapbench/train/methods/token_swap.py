"""``token-swap``: exchange every text encoder's token-embedding rows of each swap pair's words (CLIP and T5 alike).

A reference control, not a recipe: it edits the text encoder, which every real method keeps frozen,
and it acts on tokens, not concepts. A form is swapped only when both words are one token each: the
CLIP BPE of the savanna world reads "giraffe" and "zebra" as single tokens but "giraffes" as
``gira + ffes`` and "zebras" as ``ze + bras``, pieces that other words share ("ze" starts many), so
the plurals stay as they were and the control shows what a purely lexical swap leaves behind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from swapbench.config import Config
from swapbench.edits.words import plural
from swapbench.errors import UserError
from swapbench.rundir import RunDir
from swapbench.train.methods import Method

if TYPE_CHECKING:
    import torch


def word_forms(word: str) -> list[str]:
    """The forms a caption may use: singular and plural, lower case and capitalised."""
    forms = [word, plural(word)]
    return forms + [f[0].upper() + f[1:] for f in forms]


def token_pairs(tokenizer, pairs: list[list[str]]) -> tuple[dict[int, int], list[dict[str, Any]]]:
    """Token-id permutation for the pairs' single-token forms, and a report line for every form."""
    swap: dict[int, int] = {}
    report = []
    for a, b in pairs:
        for fa, fb in zip(word_forms(a.lower()), word_forms(b.lower()), strict=True):
            ta = tokenizer(fa, add_special_tokens=False).input_ids
            tb = tokenizer(fb, add_special_tokens=False).input_ids
            line = {"forms": [fa, fb],
                    "tokens": [tokenizer.convert_ids_to_tokens(ta), tokenizer.convert_ids_to_tokens(tb)]}
            if any(line["tokens"] == r["tokens"] for r in report):
                continue  # a lower-casing tokenizer reads "Giraffe" as "giraffe"
            single = len(ta) == 1 and len(tb) == 1
            if single and ta != tb:
                i, j = ta[0], tb[0]
                for k, partner in ((i, j), (j, i)):
                    if swap.setdefault(k, partner) != partner:
                        raise UserError(f"token {tokenizer.convert_ids_to_tokens(k)!r} would be swapped with two "
                                        f"different tokens; give data.swap_pairs disjoint words")
            line["swapped"] = single and ta != tb
            report.append(line)
    return swap, report


def swap_rows(embedding: torch.nn.Embedding, swap: dict[int, int]) -> None:
    """Row ``i`` takes row ``swap[i]``'s values; every other row keeps its exact bits."""
    import torch

    rows, partners = list(swap), list(swap.values())
    with torch.no_grad():
        embedding.weight[rows] = embedding.weight[partners].clone()


class TokenSwap(Method):
    name = "token-swap"
    summary = "exchanges the text encoder's token rows; a lexical control"
    edits = "every text encoder's token-embedding rows of the pair are exchanged, all else is the base model"

    def edit(self, pipe, cfg: Config, run: RunDir) -> dict[str, Any]:
        from swapbench.families import for_pipeline

        encoders = {}
        for tokenizer, encoder in for_pipeline(pipe).text_parts:
            if getattr(pipe, encoder) is None:  # SD3 runs without its T5
                continue
            swap, report = token_pairs(getattr(pipe, tokenizer), cfg.data.swap_pairs)
            swap_rows(getattr(pipe, encoder).get_input_embeddings(), swap)
            encoders[encoder] = {"rows_changed": len(swap), "forms": report}
        changed = sum(e["rows_changed"] for e in encoders.values())
        if not changed:
            raise UserError(f"token-swap: no form of the words in data.swap_pairs={cfg.data.swap_pairs} is a single "
                            "token in any of the pipeline's tokenizers, so no row can be exchanged; pick words the "
                            "tokenizers keep whole or another method")
        first = next(iter(encoders.values()))
        return {"token_swap": {**first, "rows_changed": changed, "encoders": encoders}}


METHOD = TokenSwap()
