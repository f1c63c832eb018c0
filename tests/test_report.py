import json
import re

import numpy as np
import pytest
from _fixtures_reports import CHROMIUM, chromium, make_run, table_rows
from PIL import Image

from swapbench.errors import UserError
from swapbench.reports.html import write_report
from swapbench.reports.svg import fmt

needs_chromium = pytest.mark.skipif(not CHROMIUM.is_file(),
                                    reason="/usr/bin/chromium absent: `make test` installs it "
                                    "(apt-get install chromium)")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs"), "lr3e-4", swap=0.9, preservation=0.8)


@pytest.fixture(scope="module")
def report(run):
    return write_report(run / "eval", run)


def _results(run):
    return json.loads((run / "eval" / "results.json").read_text())


def test_report_holds_every_metric_with_ci_and_n(run, report):
    html = report.read_text()
    rows = table_rows(html, "data-metric")
    metrics = _results(run)["metrics"]
    assert set(rows) == set(metrics)
    for name, m in metrics.items():
        cells = rows[name]
        assert cells[1] == fmt(m["value"])
        assert cells[2] == f"[{fmt(m['ci95'][0])}, {fmt(m['ci95'][1])}]"
        assert cells[4] == str(m["n"])
    assert rows["preservation"][1] == "0.800" and rows["swap_success/giraffe->zebra"][1] == "0.900"


def test_report_shows_gate_verdicts_against_default_rules(report):
    rows = table_rows(report.read_text(), "data-metric")
    assert rows["preservation"][6] == ">= 0.95 FAIL"
    assert rows["swap_success/giraffe->zebra"][6] == ">= 0.9 pass"
    assert re.search(r'class="v fail">FAIL<', report.read_text())


def test_report_is_self_contained(run, report):
    html = report.read_text()
    kept = sum("images" in r for r in _results(run)["per_prompt"])
    assert kept > 0 and html.count('src="data:image/png;base64,') == 2 * kept
    assert not re.search(r'(src|href)="(https?:)?//', html), "report must not fetch anything"
    assert "<script" not in html and "<link" not in html


def test_report_has_every_section(report):
    html = report.read_text()
    for anchor in ("group-swap", "group-control", "group-generality", "group-specificity", "confusion-base",
                   "confusion-tuned", "training", "audit", "provenance", "config"):
        assert f'id="{anchor}"' in html, anchor
    assert html.count("<polyline") == 3  # loss, lr and grad-norm curves
    assert "Two giraffes near a tree." in html and ">train.lr<" in html


def test_report_without_run_dir_and_with_a_torn_log(run, tmp_path):
    eval_only = tmp_path / "eval"
    eval_only.mkdir()
    (eval_only / "results.json").write_text((run / "eval" / "results.json").read_text())
    html = write_report(eval_only).read_text()  # images absent: placeholders, not a crash
    assert 'id="training"' not in html and 'id="config"' not in html and ">missing<" in html

    with open(run / "train_log.jsonl", "a") as f:
        f.write('{"step": 50, "lo')  # a run killed mid-write
    assert write_report(run / "eval", run).read_text().count("<polyline") == 3


def test_report_refuses_broken_results(tmp_path):
    (tmp_path / "results.json").write_text('{"schema_version": 1, "metr')
    with pytest.raises(UserError, match="truncated"):
        write_report(tmp_path)


def _not_blank(png):
    pixels = np.asarray(Image.open(png).convert("L"), dtype=float)
    return pixels.std(), (pixels < 200).mean()


@needs_chromium
def test_report_renders_in_chromium(run, report, tmp_path):
    dom = chromium(report, tmp_path / "profile", "--dump-dom")
    rows = table_rows(dom, "data-metric")
    metrics = _results(run)["metrics"]
    for name, m in metrics.items():
        assert rows[name][1] == fmt(m["value"]), name
    bars = sum(0 <= m["ci95"][0] <= m["ci95"][1] <= 1 for m in metrics.values())  # every metric in [0, 1] gets a CI bar
    assert "FAIL" in dom and dom.count("<svg") == bars + 3

    shot = tmp_path / "report.png"
    chromium(report, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1280,2000")
    std, ink = _not_blank(shot)
    assert std > 20 and 0.03 < ink < 0.6, (std, ink)


@needs_chromium
def test_compare_renders_in_chromium(tmp_path):
    from swapbench.cli import main

    runs = [make_run(tmp_path / "runs", f"lr{lr}", lr=lr, swap=s, preservation=p)
            for lr, s, p in ((1e-4, 0.5, 1.0), (3e-4, 0.9, 0.95), (1e-3, 1.0, 0.7))]
    for r in runs:
        write_report(r / "eval", r)
    page = tmp_path / "compare.html"
    assert main(["compare", *map(str, runs), "--html", str(page)]) == 0
    dom = chromium(page, tmp_path / "profile", "--dump-dom")
    rows = table_rows(dom, "data-run")
    assert set(rows) == {"lr0.0001", "lr0.0003", "lr0.001"}
    assert rows["lr0.001"][1:3] == ["finetune", "0.001"] and rows["lr0.001"][3].startswith("1.000")
    assert dom.count("<circle") == 3 and 'href="runs/lr0.001/eval/report.html"' in dom

    shot = tmp_path / "compare.png"
    chromium(page, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1280,900")
    std, ink = _not_blank(shot)
    assert std > 20 and 0.02 < ink < 0.6, (std, ink)
