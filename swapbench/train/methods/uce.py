"""``uce``: the closed-form cross-attention edit of Unified Concept Editing (Gandikota et al., 2024).

Every projection ``W0`` that reads only the frozen text encoders' output ``c`` (the model family's
``text_projections``: a UNet's cross-attention keys and values ``attn2.to_k`` / ``attn2.to_v``; an MMDiT's
text embedders) is edited. For each one UCE minimises

    lambda ||W - W0||^2 + s_e sum_E ||W c_i - v*_i||^2 + s_p sum_P ||W c_j - W0 c_j||^2,

whose normal equations give the edit in one linear solve:

    W* = (lambda W0 + s_e sum_E v*_i c_i^T + s_p sum_P W0 c_j c_j^T)
         (lambda I + s_e sum_E c_i c_i^T + s_p sum_P c_j c_j^T)^-1.

The edit set E holds every edit of the run at once (one solve for several concepts): the embeddings
of each source word in each template (``train.uce_templates``, plural forms included) with targets
``v*_i = W0 c'_i``, the embeddings of its stand-in at the aligned position (``train.uce_positions``): a
swap's partner (both directions), a remap's B, an anchored erasure's anchor, and for a plain erasure
the empty prompt, as UCE erases. The preservation set P holds every position of the other concepts
(the suite's labels but the edited ones) in the same templates, of the empty prompt (classifier-free
guidance's unconditional branch, and the start token every prompt shares) and, optionally, of data
captions naming no edited concept. No image is read and nothing is trained.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from swapbench.config import Config
from swapbench.edits import Edits
from swapbench.edits.words import plural
from swapbench.errors import UserError
from swapbench.families import Family, Projection, for_pipeline
from swapbench.rundir import RunDir
from swapbench.train.methods import Method

if TYPE_CHECKING:
    import torch

def closed_form(w0: torch.Tensor, edit_in: torch.Tensor, edit_out: torch.Tensor, preserve_in: torch.Tensor,
                lam: float, edit_scale: float, preserve_scale: float) -> torch.Tensor:
    """UCE's minimiser for one projection ``w0`` (out x d). Rows of ``edit_in`` (n x d) are mapped to the rows
    of ``edit_out`` (n x out); rows of ``preserve_in`` (m x d) keep their outputs ``w0 @ c``. Solved in float64:
    the Gram matrices of hundreds of near-parallel text embeddings are badly conditioned in float32."""
    import torch

    w0d, ci, vo, cp = (t.double() for t in (w0, edit_in, edit_out, preserve_in))
    d = w0d.shape[1]
    gram = lam * torch.eye(d, dtype=torch.float64, device=w0d.device)
    gram = gram + edit_scale * ci.T @ ci + preserve_scale * cp.T @ cp
    rhs = lam * w0d + edit_scale * vo.T @ ci + preserve_scale * (w0d @ cp.T) @ cp
    # W* gram = rhs with gram symmetric  <=>  gram W*^T = rhs^T
    return torch.linalg.solve(gram, rhs.T).T.to(w0.dtype)


def fill(template: str, word: str) -> tuple[str, str, str]:
    """(prompt, text before the word, the word form) for a template with ``{a}`` or ``{plural}``."""
    for field, form in (("{a}", word), ("{plural}", plural(word))):
        if field in template:
            return template.replace(field, form), template[: template.index(field)], form
    raise UserError(f"train.uce_templates entry {template!r} has no {{a}} or {{plural}}; e.g. 'a photo of a {{a}}'")


@dataclass
class Encoded:
    """The conditioning of prompts (``text``: N x L x d; ``pooled``: N x d where the family has it) and, for each
    token span of the sequence (:meth:`Family.token_spans`), where the named word's tokens sit in each prompt."""

    cond: dict[str, torch.Tensor]
    spans: list[tuple[list[int], list[int], int]]
    """Per span: the word's first and last row in each prompt, and the row after the span's end."""


class TextReader:
    """The conditioning of prompts as the family's pipeline computes it, and where a word's tokens sit in it."""

    def __init__(self, pipe, family: Family, max_sequence_length: int | None = None):
        self.pipe, self.family, self.max_sequence_length = pipe, family, max_sequence_length
        self.spans = [(getattr(pipe, name), offset, length)
                      for name, offset, length in family.token_spans(pipe, max_sequence_length)]

    def encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        cond = self.family.encode(self.pipe, prompts, self.pipe.device, self.max_sequence_length)
        return {key: value.double() for key, value in cond.items()}

    def encode_word(self, templates: list[str], word: str) -> Encoded:
        prompts = [fill(template, word)[0] for template in templates]
        spans = [self._locate(tokenizer, offset, length, templates, word) for tokenizer, offset, length in self.spans]
        return Encoded(self.encode(prompts), spans)

    @staticmethod
    def _locate(tokenizer, offset: int, length: int, templates: list[str], word: str):
        def ids(text: str) -> list[int]:
            return tokenizer(text, add_special_tokens=False).input_ids

        # tokens the tokenizer puts before the text: CLIP's start token, none for T5
        lead = tokenizer("a", add_special_tokens=True).input_ids.index(ids("a")[0])
        first, last = [], []
        for template in templates:
            prompt, before, form = fill(template, word)
            start = lead + len(ids(before)) if before.strip() else lead
            span = ids(form)
            full = tokenizer(prompt, add_special_tokens=True).input_ids
            if full[start:start + len(span)] != span or start + len(span) >= length:
                raise UserError(f"cannot locate {form!r} in the tokens of {prompt!r} (the tokenizer merges it with "
                                f"its neighbours or the prompt exceeds {length} tokens); change train.uce_templates")
            first.append(offset + start)
            last.append(offset + start + len(span) - 1)
        return first, last, offset + length


def aligned_positions(src: Encoded, dst: Encoded, k: int, mode: str) -> tuple[list[int], list[int]]:
    """Rows of prompt ``k`` in ``src`` and ``dst`` that correspond, counted from each word's last token, in
    every token span.

    A word of more tokens than its partner keeps only as many of its last pieces as the partner has."""
    rows_src, rows_dst = [], []
    for (s_first, s_last, end), (d_first, d_last, _) in zip(src.spans, dst.spans, strict=True):
        pieces = min(s_last[k] - s_first[k], d_last[k] - d_first[k])
        after = min(end - 1 - s_last[k], end - 1 - d_last[k])
        lo = 0 if mode == "last+after" else -pieces
        hi = 0 if mode == "word" else after
        rows_src += [s_last[k] + o for o in range(lo, hi + 1)]
        rows_dst += [d_last[k] + o for o in range(lo, hi + 1)]
    return rows_src, rows_dst


def own_positions(src: Encoded, k: int, mode: str) -> list[int]:
    """Rows of prompt ``k`` of ``src`` that ``mode`` edits, in every token span, where the stand-in is the
    empty prompt: its rows at the same positions are the targets.

    UCE's code counts the empty prompt's rows from the last token too, taking its start token for that
    token (the edited word's last row is mapped onto the start token's, the rows after it onto the
    end and padding rows after that). The same positions instead hold for tokenizers without a start
    token (T5 puts none before the text, so that count has nowhere to begin) and map each row onto the
    row the unconditional branch feeds the same position of the cross-attention."""
    rows = []
    for s_first, s_last, end in src.spans:
        lo = 0 if mode == "last+after" else s_first[k] - s_last[k]
        hi = 0 if mode == "word" else end - 1 - s_last[k]
        rows += [s_last[k] + o for o in range(lo, hi + 1)]
    return rows


def edit_set(reader: TextReader, edits: Edits, templates: list[str],
             mode: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per conditioning key, (inputs, stand-in inputs): rows c_i and the rows c'_i whose values
    v*_i = W0 c'_i they must give. Every source concept of every edit is mapped onto its stand-in
    (:meth:`Edit.replacement`): a swap's words onto each other, a remap's A onto B, an anchored
    erasure's A onto the anchor, at aligned positions; a plain erasure's A onto the empty prompt
    (:func:`own_positions`), UCE's own erasure. ``text``: the token rows; ``pooled``: one row per prompt."""
    import torch

    encoded: dict[str, Encoded] = {}

    def encode(word: str) -> Encoded:
        if word not in encoded:
            encoded[word] = reader.encode_word(templates, word)
        return encoded[word]

    empty = None
    inputs, partners = {}, {}
    for edit in edits:
        for src in edit.sources:
            dst = edit.replacement(src)
            source, stand_in = encode(src), encode(dst) if dst is not None else None
            if stand_in is None and empty is None:
                empty = reader.encode([""])
            for key in source.cond:
                rows = stand_in.cond[key] if stand_in is not None else empty[key].expand_as(source.cond[key])
                if key != "text":
                    inputs.setdefault(key, []).append(source.cond[key])
                    partners.setdefault(key, []).append(rows)
                    continue
                for k in range(len(templates)):
                    if stand_in is not None:
                        ps, pd = aligned_positions(source, stand_in, k, mode)
                    else:
                        ps = pd = own_positions(source, k, mode)
                    inputs.setdefault(key, []).append(source.cond[key][k, ps])
                    partners.setdefault(key, []).append(rows[k, pd])
    return {key: (torch.cat(inputs[key]), torch.cat(partners[key])) for key in inputs}


def preserve_set(reader: TextReader, concepts: list[str], templates: list[str],
                 captions: list[str]) -> dict[str, torch.Tensor]:
    """Per conditioning key, every row of the preserved prompts; identical rows (the start token, shared
    prefixes) kept once."""
    import torch

    prompts = [fill(t, c)[0] for c in concepts for t in templates] + [""] + captions
    parts: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(prompts), 256):
        for key, value in reader.encode(prompts[i:i + 256]).items():
            parts.setdefault(key, []).append(value.flatten(0, value.ndim - 2))
    return {key: torch.unique(torch.cat(rows), dim=0) for key, rows in parts.items()}


def preserved_concepts(cfg: Config) -> list[str]:
    """``train.uce_preserve``, else the eval suite's labels but the edited concepts (every edit's sources: a
    remap's B and an erasure's anchor are preserved, so that they keep drawing themselves)."""
    edits = cfg.edit_set
    sources = set(edits.sources)
    if cfg.train.uce_preserve is not None:
        clash = sorted(sources & {c.lower() for c in cfg.train.uce_preserve})
        if clash:
            verb = "/".join(dict.fromkeys(edits.of(c).verb for c in clash))
            raise UserError(f"train.uce_preserve names the {verb} word(s) {', '.join(clash)}; a concept cannot be "
                            f"both {verb} and preserved: remove them from train.uce_preserve")
        return list(cfg.train.uce_preserve)
    from swapbench.concepts import suite_labels

    return [c for c in suite_labels(cfg.eval.suite) if c.lower() not in sources]


def data_captions(cfg: Config, run: RunDir) -> list[str]:
    """``train.uce_preserve_captions`` captions of records naming no edited concept; writes data_audit.json."""
    n = cfg.train.uce_preserve_captions
    if n <= 0:
        return []
    from swapbench.data.prepare import prepare_run
    from swapbench.io import atomic_write_json

    data = prepare_run(cfg)
    captions = [c for record in data.other for c in record["captions"]]
    captions = random.Random(cfg.seed).sample(captions, min(n, len(captions)))
    atomic_write_json(run.data_audit, {**data.audit, "uce_preserve_captions": {"n": len(captions),
                                                                                "examples": captions[:8]}})
    return captions


def edit_projections(projections: list[Projection], edit: dict[str, tuple[torch.Tensor, torch.Tensor]],
                     preserve: dict[str, torch.Tensor], lam: float, edit_scale: float,
                     preserve_scale: float) -> dict[str, float]:
    """Replace the weight of every projection of the text encoders' outputs (the family's ``text_projections``)
    by its UCE solution on the rows of the conditioning it reads; returns how well the edit and the
    preservation held (residuals relative to the unedited weights)."""
    import torch

    err = {"edit_before": 0.0, "edit_after": 0.0, "preserve_base": 0.0, "preserve_drift": 0.0, "w0": 0.0, "dw": 0.0}
    for name, module, reads in projections:
        (edit_in, edit_partner), preserve_in = edit[reads], preserve[reads]
        w0 = module.weight.detach()
        if w0.shape[1] != edit_in.shape[1]:
            raise UserError(f"{name} reads {w0.shape[1]}-wide inputs but the text encoders give {edit_in.shape[1]}; "
                            "the pipeline's denoiser and text encoders do not belong together")
        w0d = w0.double()
        target = edit_partner @ w0d.T
        w = closed_form(w0d, edit_in, target, preserve_in, lam, edit_scale, preserve_scale)
        with torch.no_grad():
            module.weight.copy_(w.to(module.weight.dtype))
        err["edit_before"] += float(((edit_in @ w0d.T - target) ** 2).sum())
        err["edit_after"] += float(((edit_in @ w.T - target) ** 2).sum())
        err["preserve_base"] += float(((preserve_in @ w0d.T) ** 2).sum())
        err["preserve_drift"] += float(((preserve_in @ (w - w0d).T) ** 2).sum())
        err["w0"] += float((w0d ** 2).sum())
        err["dw"] += float(((w - w0d) ** 2).sum())
    if not projections:
        raise UserError("the denoiser has no projections of the text embeddings for UCE to edit; use another "
                        "train.method")
    return {"projections": len(projections),
            "edit_error": round((err["edit_after"] / max(err["edit_before"], 1e-30)) ** 0.5, 5),
            "preserve_drift": round((err["preserve_drift"] / max(err["preserve_base"], 1e-30)) ** 0.5, 5),
            "weight_change": round((err["dw"] / err["w0"]) ** 0.5, 5)}


class UCE(Method):
    name = "uce"
    summary = "closed-form cross-attention edit, seconds, no training loop"
    edits = "the UNet's cross-attention key/value projections are edited in closed form, all else is the base model"
    card_keys = ("train.uce_lambda", "train.uce_edit_scale", "train.uce_preserve_scale", "train.uce_templates",
                 "train.uce_positions", "train.uce_preserve", "train.uce_preserve_captions")

    def reads_data(self, cfg: Config) -> bool:
        """Only to take ``train.uce_preserve_captions`` data captions into the preservation set."""
        return cfg.train.uce_preserve_captions > 0

    def edit(self, pipe, cfg: Config, run: RunDir) -> dict[str, Any]:
        t = cfg.train
        if t.uce_lambda <= 0 and t.uce_preserve_scale <= 0:
            raise UserError("train.uce_lambda and train.uce_preserve_scale are both 0: the solve is then singular "
                            "(nothing anchors the weights); set train.uce_lambda > 0")
        if min(t.uce_lambda, t.uce_edit_scale, t.uce_preserve_scale) < 0:
            raise UserError("train.uce_lambda, train.uce_edit_scale and train.uce_preserve_scale must be >= 0")
        if not t.uce_templates:
            raise UserError("train.uce_templates is empty; give at least one, e.g. ['{a}', 'a photo of a {a}']")
        family = for_pipeline(pipe)
        reader = TextReader(pipe, family, cfg.model.max_sequence_length)
        concepts = preserved_concepts(cfg)
        captions = data_captions(cfg, run)
        edit = edit_set(reader, cfg.edit_set, t.uce_templates, t.uce_positions)
        preserve = preserve_set(reader, concepts, t.uce_templates, captions)
        stats = edit_projections(family.text_projections(family.denoiser_of(pipe)), edit, preserve,
                                 t.uce_lambda, t.uce_edit_scale, t.uce_preserve_scale)
        return {"uce": {**stats, "edit_vectors": len(edit["text"][0]), "preserve_vectors": len(preserve["text"]),
                        "preserved_concepts": concepts, "preserve_captions": len(captions)}}


METHOD = UCE()
