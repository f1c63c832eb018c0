"""The metric table: every metric family of results.json defined once.

A family names its pattern, definition, direction (``higher_is_better``), estimator and interval
method, and which per-prompt rows it counts and how (``outcome``), plus what the base model scores
on the same row (``base_outcome``, for "what moved" against the base). The scorer
(``swapbench.eval.scoring``), the terminal summary, the report, ``compare`` and the gate all read
this table, so a metric's name, order, direction and rows cannot drift apart between them.

Metrics outside the table (another module's ``robust/...``) keep the ``higher_is_better`` and
``description`` of their own results.json entry and are listed after the known families.

Further judges (``eval.judges``) report every row-based metric again as ``judge/<name>/<metric>``:
the same family, counted on the rows as that judge labelled them (``judge_rows``), listed after the
primary judge's metrics and never among the headline; ``agreement/<name>/share|kappa`` compares
each with the primary judge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]
PROPORTION_INTERVAL = "Wilson at the cluster-bootstrap effective n, t quantile (prompts as clusters)"
MEAN_INTERVAL = "mean +- t cluster-bootstrap SE (prompts as clusters)"
KAPPA_INTERVAL = "kappa +- t cluster-bootstrap SE (prompts as clusters), within [-1, 1]"
JUDGE_PREFIX = "judge/"


@dataclass(frozen=True)
class Family:
    head: str
    pattern: str
    definition: str
    higher_is_better: bool | None
    estimator: str
    """``share`` of binary row outcomes, ``mean`` of real row values, ``distance`` between sample sets,
    ``agreement`` between two judges, or ``summary``: one number made of several row sets
    (``swapbench.eval.summaries``)."""
    interval: str
    headline: bool = False
    pooled: bool = False
    """Also reported without a suffix, over every row of the family."""
    groups: tuple[str, ...] = ()
    by: str = "concept"
    """What the name's suffix selects: ``concept``, ``kind``, ``group``, ``direction`` (``A->B``: concept A and
    its row's target B) or ``anchor`` (``A->C``: concept A and its row's anchor C)."""
    outcome: Callable[[Row], float] | None = None
    base_outcome: Callable[[Row], float] | None = None
    keep: Callable[[Row], bool] | None = None
    several: bool = False
    """Only reported for a run of several edits (a single edit's own metrics already say it)."""
    per_edit: bool = False
    """One number per edit (direction, erased concept): the headline shows those, not their pooled mean."""

    @property
    def binary(self) -> bool:
        return self.estimator == "share"

    def select(self, row: Row, suffix: str | None) -> bool:
        if row.get("group") not in self.groups or (self.keep and not self.keep(row)):
            return False
        if suffix is None:
            return True
        return self.suffix_of(row) == suffix

    def suffix_of(self, row: Row) -> str:
        if self.by in ("direction", "anchor"):
            return f"{row['concept']}->{row.get('target' if self.by == 'direction' else 'anchor') or '?'}"
        return str(row[self.by])


def succeeds(row: Row, label: str) -> bool:
    """Whether ``label`` shows a row's edit: its ``target`` where it has one, else (an erasure) anything but
    its concept; a row naming no edited concept succeeds as itself."""
    target = row.get("target")
    if target is not None:
        return label == target
    return label != row["concept"] if row.get("erased") else label == row["concept"]


def _success(row: Row) -> float:
    return float(bool(row["success"]))


def _base_succeeds(row: Row) -> float:
    return float(succeeds(row, row["base_label"]))


def _base_is_concept(row: Row) -> float:
    return float(row["base_label"] == row["concept"])


def _unchanged(row: Row) -> float:
    return 1.0  # the base's label equals itself: any change of label is the tuned model's


def _tuned_is_concept(row: Row) -> float:
    return float(row["tuned_label"] == row["concept"])


def _base_valid(row: Row) -> bool:
    return row["base_label"] == row["concept"]


def _prefers_target(row: Row, which: str) -> float:
    scores = row["scores"]
    return float(scores[row[which]] > scores[row["concept"]])


EDITED = ("swap", "remap", "erase")
"""The row groups of prompts naming an edited concept: one per edit kind (swapbench/edits/)."""
FAMILIES: tuple[Family, ...] = (
    Family("swap_success", "swap_success[/A->B]", "share of images from prompts naming A that the judge labels B "
           "(pooled: all directions, equal n each)", True, "share", PROPORTION_INTERVAL, headline=True, per_edit=True,
           pooled=True, groups=("swap",), by="direction", outcome=_success, base_outcome=_base_succeeds),
    Family("swap_success_valid", "swap_success_valid/A->B", "swap success over the (prompt, seed) pairs whose base "
           "image the judge labelled A (the base drew the source concept)", True, "share", PROPORTION_INTERVAL,
           headline=True, per_edit=True, groups=("swap",), by="direction", outcome=_success,
           base_outcome=_base_succeeds, keep=_base_valid),
    Family("remap_success", "remap_success[/A->B]", "share of images from prompts naming A that the judge labels B "
           "(a one-way remap; B's own prompts are controls)", True, "share", PROPORTION_INTERVAL, headline=True,
           per_edit=True, pooled=True, groups=("remap",), by="direction", outcome=_success,
           base_outcome=_base_succeeds),
    Family("remap_success_valid", "remap_success_valid/A->B", "remap success over the (prompt, seed) pairs whose "
           "base image the judge labelled A", True, "share", PROPORTION_INTERVAL, headline=True, per_edit=True,
           groups=("remap",), by="direction", outcome=_success, base_outcome=_base_succeeds, keep=_base_valid),
    Family("erase_success", "erase_success[/A]", "share of images from prompts naming erased concept A that the judge "
           "does not label A (any other label, the suite's 'nothing' labels included, counts)", True, "share",
           PROPORTION_INTERVAL, headline=True, per_edit=True, pooled=True, groups=("erase",), outcome=_success,
           base_outcome=_base_succeeds),
    Family("erase_success_valid", "erase_success_valid/A", "erase success over the (prompt, seed) pairs whose base "
           "image the judge labelled A (there was something to erase)", True, "share", PROPORTION_INTERVAL,
           headline=True, per_edit=True, groups=("erase",), outcome=_success, base_outcome=_base_succeeds,
           keep=_base_valid),
    Family("erase_anchor", "erase_anchor/A->C", "share of images from prompts naming erased concept A that the judge "
           "labels its anchor C", True, "share", PROPORTION_INTERVAL, groups=("erase",), by="anchor",
           outcome=lambda row: float(row["tuned_label"] == row["anchor"]),
           base_outcome=lambda row: float(row["base_label"] == row["anchor"]), keep=lambda row: "anchor" in row),
    Family("edit_success", "edit_success", "several edits: the share of edited images that show their edit, over "
           "every edited direction (swap and remap directions, erased concepts; equal n each)", True, "share",
           PROPORTION_INTERVAL, headline=True, pooled=True, groups=EDITED, by="group", outcome=_success,
           base_outcome=_base_succeeds, several=True),
    Family("source_retained", "source_retained/A", "share of images from prompts naming swapped or remapped concept A "
           "that the tuned model still draws as A", False, "share", PROPORTION_INTERVAL, groups=("swap", "remap"),
           outcome=_tuned_is_concept, base_outcome=_base_is_concept),
    Family("erased_accuracy", "erased_accuracy/A", "ESD's and UCE's erased-class accuracy: share of images from "
           "prompts naming erased concept A that the judge labels A (top-1; 1 - erase_success)", False, "share",
           PROPORTION_INTERVAL, groups=("erase",), outcome=_tuned_is_concept, base_outcome=_base_is_concept),
    Family("clip_accuracy", "clip_accuracy/A->C", "Concept Ablation's CLIP accuracy: share of images from prompts "
           "naming erased concept A that the judge scores closer to its anchor C than to A", True, "share",
           PROPORTION_INTERVAL, groups=("erase",), by="anchor",
           outcome=lambda row: _prefers_target(row, "anchor"), keep=lambda row: "anchor" in row and "scores" in row),
    Family("mace_h", "mace_h", "MACE's harmonic mean 3 / (1/(1 - Acc_E) + 1/Acc_S + 1/(1 - Acc_G)) of an erasure: "
           "Acc_E the share of erase images judged as their erased concept, Acc_S the share of control and "
           "specificity images judged as their prompted concept, Acc_G the share of generality images of erased "
           "concepts judged as the erased concept (all erased concepts pooled; swapbench/eval/summaries.py)", True,
           "summary", "H +- t SE, the larger of a cluster bootstrap over prompts stratified by the three row sets "
           "(t with the smallest set's prompts - 1 degrees of freedom) and the delta method's at the Agresti-Coull "
           "shares, within [0, 1]"),
    Family("preservation", "preservation[/C]", "share of same-seed control pairs whose tuned label equals the base "
           "label", True, "share", PROPORTION_INTERVAL, headline=True, pooled=True, groups=("control",),
           outcome=_success, base_outcome=_unchanged),
    Family("preservation_as_prompted", "preservation_as_prompted/C", "share of control images the tuned model draws "
           "as the prompted concept C", True, "share", PROPORTION_INTERVAL, groups=("control",),
           outcome=_tuned_is_concept, base_outcome=_base_is_concept),
    Family("generality", "generality[/kind]", "share of plurals, contexts, paraphrases and compositions of an edited "
           "concept that show the edit (judged as its target, an erased one as anything else; compositions: the "
           "target preferred over the named concept, scored for edits with a target only)", True, "share",
           PROPORTION_INTERVAL, headline=True, pooled=True, groups=("generality",), by="kind", outcome=_success,
           base_outcome=_base_succeeds),
    Family("specificity", "specificity[/C]", "share of same-seed near-neighbour pairs whose tuned label equals the "
           "base label", True, "share", PROPORTION_INTERVAL, headline=True, pooled=True, groups=("specificity",),
           outcome=_success, base_outcome=_unchanged),
    Family("custom", "custom[/C]", "custom prompts: an edited concept showing its edit, any other judged as itself",
           True, "share", PROPORTION_INTERVAL, pooled=True, groups=("custom",), outcome=_success,
           base_outcome=_base_succeeds),
    Family("kid_vs_base", "kid_vs_base", "KID (unbiased MMD^2, cubic kernel) between tuned and base control samples, "
           "independent halves of the same-seed pairs", False, "distance",
           "value +- t SE, the larger of a delete-one-prompt jackknife and the spread over other half splits",
           headline=True),
    Family("fid_vs_base", "fid_vs_base", "Frechet distance between Gaussians fitted to tuned and base control "
           "features (biased at small n)", False, "distance",
           "value +- t cluster-bootstrap SE over prompts (the FID at the suite's size)"),
    Family("clip_score", "clip_score/control", "100 x cos(tuned image, prompt) in the judge's space, control prompts",
           True, "mean", MEAN_INTERVAL, groups=("control",), by="group", outcome=lambda row: float(row["clip"]),
           base_outcome=lambda row: float(row["clip_base"]), keep=lambda row: "clip" in row),
    Family("clip_score_base", "clip_score_base/control", "100 x cos(base image, prompt) in the judge's space, control "
           "prompts", True, "mean", MEAN_INTERVAL, groups=("control",), by="group",
           outcome=lambda row: float(row["clip_base"]), keep=lambda row: "clip_base" in row),
    Family("base_fidelity", "base_fidelity/C", "share of base images of prompts naming C that the judge labels C "
           "(the base model and the judge can draw and see C)", None, "share", PROPORTION_INTERVAL,
           groups=(*EDITED, "control", "specificity"), outcome=lambda row: float(row["base_label"] == row["concept"])),
    Family("agreement", "agreement/J/share, agreement/J/kappa", "further judge J against the primary judge over "
           "every base and tuned image both labelled: share = the share labelled alike, kappa = Cohen's kappa "
           "(agreement beyond chance, 1 = the same labels)", None, "agreement",
           f"share: {PROPORTION_INTERVAL}; kappa: {KAPPA_INTERVAL}"),
)
BY_HEAD = {f.head: f for f in FAMILIES}
VALIDITY_FLOOR = 0.8
"""Base fidelity on an edited concept below this: its edit's numbers do not mean what they say."""


def judge_of(name: str) -> tuple[str | None, str]:
    """``judge/<J>/<metric>`` -> (``J``, ``<metric>``); a primary judge's name -> (None, the name)."""
    if name.startswith(JUDGE_PREFIX):
        judge, _, metric = name[len(JUDGE_PREFIX):].partition("/")
        if judge and metric:
            return judge, metric
    return None, name


def judge_metric(judge: str, name: str) -> str:
    """The name of metric ``name`` as further judge ``judge`` scores it."""
    return f"{JUDGE_PREFIX}{judge}/{name}"


PRIMARY_ONLY = ("labels", "scores", "clip", "clip_base")
"""Row fields that are the primary judge's alone (its probabilities and its image-text scores)."""


def judge_rows(per_prompt: list[Row], judge: str) -> list[Row]:
    """The rows as further judge ``judge`` labelled them: its base and tuned labels and success in place
    of the primary's, without the primary's own fields; rows it did not label are left out."""
    out = []
    for row in per_prompt:
        mine = (row.get("labels") or {}).get(judge)
        if mine is not None:
            out.append({**{k: v for k, v in row.items() if k not in PRIMARY_ONLY}, "base_label": mine["base"],
                        "tuned_label": mine["tuned"], "success": mine["success"]})
    return out


def split(name: str) -> tuple[Family | None, str | None]:
    """The family of a metric name and its suffix (``swap_success/giraffe->zebra`` -> family, ``giraffe->zebra``;
    a further judge's ``judge/J/swap_success/giraffe->zebra`` the same)."""
    head, _, suffix = judge_of(name)[1].partition("/")
    return BY_HEAD.get(head), (suffix or None)


def family(name: str) -> Family | None:
    return split(name)[0]


def higher_is_better(name: str, entry: dict | None = None) -> bool | None:
    """The table's direction; a metric outside the table keeps its entry's own."""
    fam = family(name)
    if fam is not None:
        return fam.higher_is_better
    return (entry or {}).get("higher_is_better")


def definition(name: str, entry: dict | None = None) -> str:
    """The table's definition (a further judge's metric names its judge); outside the table, the entry's own."""
    fam = family(name)
    if fam is None:
        return str((entry or {}).get("description", ""))
    judge = judge_of(name)[0]
    return fam.definition if judge is None else f"judge {judge}: {fam.definition}"


def rank(name: str) -> tuple[bool, str, int, int]:
    """Sort key: the primary judge's metrics, then each further judge's (by name); within them table order,
    the pooled metric before its parts (a stable sort keeps the parts' order)."""
    judge = judge_of(name)[0]
    fam, suffix = split(name)
    index = FAMILIES.index(fam) if fam is not None else len(FAMILIES)
    return (judge is not None, judge or "", index, 0 if suffix is None else 1)


def ordered(names: Any) -> list[str]:
    return sorted(names, key=rank)


def headline(metrics: dict, pooled: bool = False) -> list[str]:
    """The headline metrics of ``metrics``, in table order: each edit (swap and remap direction, erased
    concept) and its base-valid share, the mean over several edits, then the pooled preservation,
    generality, specificity and KID (the terminal summary, the report).

    ``pooled``: the view with one number per quantity (``compare``'s table of several runs, the model
    card's eval results): a family's pooled number leads its directions, and a family without one (the
    base-valid shares) is left out."""
    out = []
    for name in ordered(metrics):
        fam, suffix = split(name)
        if fam is None or not fam.headline or judge_of(name)[0] is not None:
            continue
        if fam.per_edit and pooled and not fam.pooled:
            continue
        if fam.per_edit and suffix is None and not pooled:
            continue  # its edits are the headline; the pooled mean hides an asymmetric swap
        if not fam.per_edit and suffix is not None:
            continue
        out.append(name)
    return out


def rows_for(name: str, per_prompt: list[Row]) -> list[Row]:
    """The rows metric ``name`` counts; a further judge's metric counts them as that judge labelled them."""
    fam, suffix = split(name)
    if fam is None or fam.outcome is None:
        return []
    judge = judge_of(name)[0]
    rows = per_prompt if judge is None else judge_rows(per_prompt, judge)
    return [row for row in rows if fam.select(row, suffix)]


def row_key(row: Row) -> tuple:
    """What pairs a row with its twin in another evaluation on the same suite, seeds and sampler."""
    return (row.get("group"), row.get("kind"), row.get("prompt"), row.get("seed"))


def validity_warnings(results: dict) -> list[str]:
    """One sentence per swapped concept whose base fidelity is below ``VALIDITY_FLOOR``."""
    from swapbench import schema

    out = []
    for concept in schema.edits(results).sources:
        m = results.get("metrics", {}).get(f"base_fidelity/{concept}")
        if m is not None and m["value"] == m["value"] and m["value"] < VALIDITY_FLOOR:
            out.append(f"base fidelity on {concept} is {m['value']:.2f} (n={m['n']}), below {VALIDITY_FLOOR}: the base "
                       f"model or the judge cannot draw or see {concept}, so edit numbers from {concept} do not mean "
                       f"what they say; read its *_valid metric")
    return out
