"""``token-swap``: replace every text encoder's token-embedding rows of each edited word (CLIP and T5 alike).

Each source word's row takes the base row of its stand-in (:meth:`Edit.replacement`): a swap exchanges
the two words' rows, a remap gives A's rows B's values (B's stay), an anchored erasure gives A's rows the
anchor's, and a plain erasure the padding token's (:func:`stand_in_token`).

A reference control, not a recipe: it edits the text encoder, which every real method keeps frozen,
and it acts on tokens, not concepts. A form is replaced only when both words are one token each: the
CLIP BPE of the savanna world reads "giraffe" and "zebra" as single tokens but "giraffes" as
``gira + ffes`` and "zebras" as ``ze + bras``, pieces that other words share ("ze" starts many), so
the plurals stay as they were and the control shows what a purely lexical swap leaves behind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from swapbench.config import Config
from swapbench.edits import Edits
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


def stand_in_token(tokenizer) -> tuple[int, str]:
    """The row a plain erasure's word takes: the padding token's (the end-of-text token where the tokenizer
    has no padding token). Padding is what fills every prompt after its text and all of the empty prompt
    after its start, so the erased word reads as one more position of padding: token-swap's counterpart of
    UCE mapping the word onto the empty prompt. (The world's and SD's CLIP pad with the end-of-text token
    itself; T5 pads with ``<pad>``.)"""
    token = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return token, tokenizer.convert_ids_to_tokens(token)


def token_map(tokenizer, edits: Edits) -> tuple[dict[int, int], list[dict[str, Any]]]:
    """Which row each changed token id takes (``{i: j}``: row ``i`` takes row ``j``'s base values) for every
    source word's single-token forms, and a report line for every form. A swap's two directions share their
    lines, as both change together."""
    rows: dict[int, int] = {}
    report = []
    for edit in edits:
        lines: list[dict[str, Any]] = []
        for src in edit.sources:
            dst = edit.replacement(src)
            forms = word_forms(src)
            pad, pad_token = stand_in_token(tokenizer)
            for fa, fb in zip(forms, word_forms(dst) if dst else [pad_token] * len(forms), strict=True):
                ta = tokenizer(fa, add_special_tokens=False).input_ids
                tb = tokenizer(fb, add_special_tokens=False).input_ids if dst else [pad]
                tokens = [tokenizer.convert_ids_to_tokens(ta), tokenizer.convert_ids_to_tokens(tb)]
                changed = len(ta) == 1 and len(tb) == 1 and ta != tb
                if changed and rows.setdefault(ta[0], tb[0]) != tb[0]:
                    raise UserError(f"token {tokens[0][0]!r} would take the rows of two different tokens; give the "
                                    f"edits ({edits.describe()}) disjoint words")
                # a lower-casing tokenizer reads "Giraffe" as "giraffe"; a swap's second direction mirrors its first
                if any(sorted(map(tuple, tokens)) == sorted(map(tuple, r["tokens"])) for r in lines):
                    continue
                lines.append({"forms": [fa, fb], "tokens": tokens, edit.verb: changed})
        report += lines
    return rows, report


def swap_rows(embedding: torch.nn.Embedding, swap: dict[int, int]) -> None:
    """Row ``i`` takes row ``swap[i]``'s base values (all read before any is written); every other row keeps
    its exact bits."""
    import torch

    rows, partners = list(swap), list(swap.values())
    with torch.no_grad():
        embedding.weight[rows] = embedding.weight[partners].clone()


class TokenSwap(Method):
    name = "token-swap"
    summary = "replaces the text encoder's token rows of the edited words; a lexical control"
    edits = "every text encoder's token-embedding rows of the edited words are replaced, all else is the base model"

    def edit(self, pipe, cfg: Config, run: RunDir) -> dict[str, Any]:
        from swapbench.families import for_pipeline

        encoders = {}
        for tokenizer, encoder in for_pipeline(pipe).text_parts:
            if getattr(pipe, encoder) is None:  # SD3 runs without its T5
                continue
            swap, report = token_map(getattr(pipe, tokenizer), cfg.edit_set)
            swap_rows(getattr(pipe, encoder).get_input_embeddings(), swap)
            encoders[encoder] = {"rows_changed": len(swap), "forms": report}
        changed = sum(e["rows_changed"] for e in encoders.values())
        if not changed:
            raise UserError(f"token-swap: no form of the words of the edits ({cfg.edit_set.describe()}) is a single "
                            "token in any of the pipeline's tokenizers, so no row can be replaced; pick words the "
                            "tokenizers keep whole or another method")
        first = next(iter(encoders.values()))
        return {"token_swap": {**first, "rows_changed": changed, "encoders": encoders}}


METHOD = TokenSwap()
