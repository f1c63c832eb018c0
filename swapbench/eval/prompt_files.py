"""``swapbench eval --prompts FILE``: a user's prompts as the group ``custom``, from JSONL or the field's CSV files.

JSONL: one {"prompt", "concept"} object per line, each drawn with the seeds ``range(eval.seeds or 8)``.

CSV: the columns of the prompt files concept-erasure work publishes (ESD, UCE, UnlearnDiffAtk:
``case_number, prompt, evaluation_seed, class`` and variants). Column names are read without case
or surrounding spaces; the first present of each kind is used and other columns are ignored:
- ``prompt`` (required);
- a seed, ``evaluation_seed`` or ``seed``: each row is one image drawn with its own seed, and
  ``eval.seeds`` does not change it (it sizes the suite's groups only); without a seed column every
  row is drawn with the seeds of a JSONL prompt;
- a concept, ``class``, ``concept``, ``type`` or ``categories`` (required);
- ``case_number`` (optional), carried into the row's ``per_prompt`` entry to join results back to the file.
Rows with the same prompt (a prompt names one concept) become one prompt item with all their seeds,
so the metrics' intervals cluster the images of one prompt as they do for the suite's own prompts.

Either format: a concept is one of the suite's judge labels (case-insensitive), or is mapped to one
by ``--prompt-concepts 'church=building,french horn=horn'``. A swapped concept is a target (it
succeeds when judged as its partner), any other a control (it succeeds when judged as itself).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from swapbench.errors import UserError
from swapbench.eval.rows import PromptItem

PROMPT_COLUMN = "prompt"
SEED_COLUMNS = ("evaluation_seed", "seed")
CONCEPT_COLUMNS = ("class", "concept", "type", "categories")
CASE_COLUMN = "case_number"
MAPPING_FLAG = "--prompt-concepts"
CSV_LAYOUT = ("a header row with a prompt column, a concept column (class, concept, type or categories) and "
              "optionally evaluation_seed (or seed) and case_number")


@dataclass
class PromptFile:
    items: list[PromptItem]
    seed_column: str | None
    """The CSV column the images' seeds came from; None when every prompt got the default seeds."""


def parse_concept_map(text: str | None, labels: Sequence[str]) -> dict[str, str]:
    """``--prompt-concepts 'church=building,french horn=horn'``: a file's concept name (any case) -> a judge label."""
    mapping: dict[str, str] = {}
    for entry in (text or "").split(","):
        name, sep, label = (part.strip() for part in entry.partition("="))
        if not entry.strip():
            continue
        if not sep or not name or not label:
            raise UserError(f"{MAPPING_FLAG} entry {entry.strip()!r} must be NAME=LABEL, e.g. "
                            f"{MAPPING_FLAG} 'church=building,french horn=horn'")
        known = _label(label, labels)
        if known is None:
            raise UserError(f"{MAPPING_FLAG} maps {name!r} to {label!r}, which is not a label of the suite's judge "
                            f"({', '.join(labels)}); map it to one of those")
        mapping[name.casefold()] = known
    return mapping


def custom_items(path: str | Path, labels: Sequence[str], seeds: int, mapping: dict[str, str]) -> PromptFile:
    """The prompts of ``path`` (``.csv``: the CSV layout, otherwise JSONL) as group ``custom``. Prompts
    without a seed of their own (JSONL, a CSV without a seed column) are drawn with ``range(seeds)``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prompts file {path} not found; pass a JSONL file with one {{\"prompt\", \"concept\"}} per "
                        "line or a CSV file with prompt and class columns")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheet programs start CSV files with a BOM
    except UnicodeDecodeError:
        raise UserError(f"prompts file {path} is not UTF-8 text; save it as UTF-8") from None
    if not text.strip():
        layout = CSV_LAYOUT if path.suffix.lower() == ".csv" else "one {\"prompt\", \"concept\"} object per line"
        raise UserError(f"prompts file {path} is empty; it needs {layout}")
    resolve = _Concepts(path, labels, mapping)
    if path.suffix.lower() == ".csv":
        prompts = _read_csv(path, text, resolve, seeds)
    else:
        prompts = PromptFile(_read_jsonl(path, text, resolve, seeds), None)
    if not prompts.items:
        raise UserError(f"prompts file {path} holds no prompts")
    return prompts


@dataclass
class _Concepts:
    """A file's concept names -> the judge's labels; one line (exit 2) for a name neither a label nor mapped."""

    path: Path
    labels: Sequence[str]
    mapping: dict[str, str]

    def __call__(self, concept: str, line: int) -> str:
        label = self.mapping.get(concept.casefold()) or _label(concept, self.labels)
        if label is None:
            raise UserError(f"{self.path}:{line}: concept {concept!r} is not a label of the suite's judge "
                            f"({', '.join(self.labels)}); map it to one with {MAPPING_FLAG} '{concept}=LABEL'")
        return label


def _label(name: str, labels: Sequence[str]) -> str | None:
    return next((label for label in labels if label.casefold() == name.casefold()), None)


def _read_jsonl(path: Path, text: str, resolve: _Concepts, seeds: int) -> list[PromptItem]:
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            prompt, concept = str(obj["prompt"]), str(obj["concept"])
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{path}:{number} must be a JSON object with \"prompt\" and \"concept\"") from None
        items.append(PromptItem("custom", "custom", resolve(concept, number), prompt, tuple(range(seeds))))
    return items


@dataclass
class _Row:
    line: int
    prompt: str
    concept: str
    seeds: tuple[int, ...]
    case: int | str | None


def _read_csv(path: Path, text: str, resolve: _Concepts, seeds: int) -> PromptFile:
    reader = csv.reader(io.StringIO(text, newline=""))  # newline="": quoted cells may hold line breaks
    try:
        lines = ([cell.strip() for cell in cells] for cells in reader)
        header = [name.lower() for name in next((cells for cells in lines if any(cells)), [])]
        columns = _columns(path, header)
        rows = [_read_row(path, reader.line_num, header, columns, cells, resolve, seeds) for cells in lines
                if any(cells)]
    except csv.Error as e:
        raise UserError(f"{path}:{reader.line_num}: not readable as CSV ({e}); check its quoting") from None
    return PromptFile(_items(path, rows), columns["seed"])


def _columns(path: Path, header: list[str]) -> dict[str, str | None]:
    """Which column of ``header`` holds the prompt, seed, concept and case number."""
    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if repeated:
        raise UserError(f"{path}: column {repeated[0]!r} appears twice in the header (names are read without case); "
                        "rename or delete one")
    if PROMPT_COLUMN not in header:
        raise UserError(f"{path}: no prompt column (its columns: {', '.join(header)}); it needs {CSV_LAYOUT}")
    concept = next((name for name in CONCEPT_COLUMNS if name in header), None)
    if concept is None:
        raise UserError(f"{path}: no concept column (its columns: {', '.join(header)}); name the column of what each "
                        f"prompt should draw one of {', '.join(CONCEPT_COLUMNS)}")
    return {"prompt": PROMPT_COLUMN, "concept": concept, "seed": next((n for n in SEED_COLUMNS if n in header), None),
            "case": CASE_COLUMN if CASE_COLUMN in header else None}


def _read_row(path: Path, line: int, header: list[str], columns: dict[str, str | None], cells: list[str],
              resolve: _Concepts, seeds: int) -> _Row:
    if len(cells) != len(header):
        # Usually a prompt with an unquoted comma, which would shift every later column of the row.
        raise UserError(f"{path}:{line}: {len(cells)} cells but {len(header)} columns in the header; quote cells "
                        "that contain commas (\"a giraffe, tall\")")
    cell = dict(zip(header, cells, strict=True))
    prompt, concept = cell[PROMPT_COLUMN], cell[columns["concept"]]
    if not prompt:
        raise UserError(f"{path}:{line}: the prompt cell is empty; fill it or delete the row")
    if not concept:
        raise UserError(f"{path}:{line}: the {columns['concept']} cell is empty; name the concept the prompt should "
                        "draw or delete the row")
    seed_column = columns["seed"]
    row_seeds = (_seed(path, line, seed_column, cell[seed_column]),) if seed_column else tuple(range(seeds))
    case = _case(cell[columns["case"]]) if columns["case"] else None
    return _Row(line, prompt, resolve(concept, line), row_seeds, case)


def _seed(path: Path, line: int, column: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        # "3.0": a seed column that a spreadsheet or pandas wrote as floats
        value = _integral_float(text)
    if value is None or value < 0:
        raise UserError(f"{path}:{line}: seed {text!r} in column {column} is not a whole number >= 0; write one, or "
                        "delete the column to draw every prompt with the suite's seeds")
    return value


def _integral_float(text: str) -> int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def _case(text: str) -> int | str | None:
    """A case number as the file wrote it: an integer where it is one, so a join on the file's column matches."""
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return text


def _items(path: Path, rows: list[_Row]) -> list[PromptItem]:
    """One item per (prompt, concept), in the file's order, with its rows' seeds and case numbers."""
    first_line: dict[tuple[str, int], int] = {}
    concept_of: dict[str, _Row] = {}
    grouped: dict[str, list[tuple[int, int | str | None]]] = {}
    for row in rows:
        earlier = concept_of.setdefault(row.prompt, row)
        if earlier.concept != row.concept:
            # A prompt drawn once per seed cannot count as two concepts; its rows would also share one results key.
            raise UserError(f"{path}:{row.line}: prompt {row.prompt!r} is given concept {row.concept!r} here but "
                            f"{earlier.concept!r} on line {earlier.line}; give a prompt one concept")
        for seed in row.seeds:
            seen = first_line.setdefault((row.prompt, seed), row.line)
            if seen != row.line:
                raise UserError(f"{path}:{row.line}: repeats the prompt {row.prompt!r} with seed {seed} of line "
                                f"{seen}, which would draw the same image twice; delete one of the rows or give it "
                                "another seed")
            grouped.setdefault(row.prompt, []).append((seed, row.case))
    items = []
    for prompt, drawn in grouped.items():
        cases = tuple(case for _, case in drawn)
        items.append(PromptItem("custom", "custom", concept_of[prompt].concept, prompt, tuple(s for s, _ in drawn),
                                case_numbers=cases if any(c is not None for c in cases) else ()))
    return items
