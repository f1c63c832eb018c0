import csv
import json
import re

import pytest
from _fixtures_reports import make_run, table_rows

from swapbench.cli import main
from swapbench.reports.html import write_report

LRS = ((1e-4, 0.5, 1.0), (3e-4, 0.9, 0.95), (1e-3, 1.0, 0.7))  # lr, swap share, preservation share


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = [make_run(root, f"lr{lr}", lr=lr, swap=s, preservation=p) for lr, s, p in LRS]
    for run in runs:
        write_report(run / "eval", run)
    return runs


def _table_lines(out):
    """Rows of the runs table (the paired table follows it)."""
    return [line for line in out.split("paired vs")[0].splitlines() if line.startswith("│")]


def test_three_learning_rates_show_the_differing_key_and_metrics(runs, tmp_path, capsys):
    assert main(["compare", *map(str, runs), "--csv", str(tmp_path / "c.csv"), "--html", str(tmp_path / "c.html")]) == 0
    out = capsys.readouterr().out
    assert "settings that differ: train.lr" in out
    assert "train.batch_size" not in out and "output_dir" not in out
    lines = _table_lines(out)
    value_rows = [line for line in lines if "lr0" in line]
    assert [row.split("│")[1].strip() for row in value_rows] == ["lr0.0001", "lr0.0003", "lr0.001"]
    # run, method, train.lr, swap_success, g->z, z->g, preservation, ... per row
    cells = [[c.strip() for c in row.split("│")[1:-1]] for row in value_rows]
    assert [c[1] for c in cells] == ["finetune"] * 3
    assert [c[2] for c in cells] == ["0.0001", "0.0003", "0.001"]
    assert [c[3] for c in cells] == ["0.500", "0.900", "1.000"]
    assert [c[6] for c in cells] == ["1.000", "0.950", "0.700"]
    assert [c[-1] for c in cells] == ["fail", "pass", "fail"]

    rows = list(csv.DictReader(open(tmp_path / "c.csv")))
    assert [r["train.lr"] for r in rows] == ["0.0001", "0.0003", "0.001"]
    assert [r["method"] for r in rows] == ["finetune"] * 3
    assert [float(r["preservation"]) for r in rows] == [1.0, 0.95, 0.7]
    expected = json.loads((runs[1] / "eval" / "results.json").read_text())["metrics"]["preservation"]["ci95"]
    assert [float(rows[1]["preservation.ci_lo"]), float(rows[1]["preservation.ci_hi"])] == pytest.approx(expected)
    assert rows[1]["preservation.n"] == "20"

    html = (tmp_path / "c.html").read_text()
    assert set(table_rows(html, "data-run")) == {"lr0.0001", "lr0.0003", "lr0.001"}
    links = re.findall(r'href="([^"#]+)"', html)
    assert len(links) == 9  # legend, table and scatter point of each run
    assert {(tmp_path / link).resolve() for link in links} == {(r / "eval" / "report.html").resolve() for r in runs}


def test_runs_of_different_methods_show_the_method_column_and_one_point_each(tmp_path, capsys):
    runs = []
    for method, swap, pres in (("finetune", 0.9, 0.95), ("uce", 0.95, 1.0), ("token-swap", 1.0, 1.0)):
        run = make_run(tmp_path, method, swap=swap, preservation=pres)
        config = json.loads((run / "config.json").read_text())
        config["train"]["method"] = method
        (run / "config.json").write_text(json.dumps(config))
        write_report(run / "eval", run)
        runs.append(run)
    assert main(["compare", *map(str, runs), "--csv", str(tmp_path / "c.csv"), "--html", str(tmp_path / "c.html")]) == 0
    out = capsys.readouterr().out
    assert "settings that differ: train.method" in out  # not "all settings equal": the method differs
    cells = [[c.strip() for c in row.split("│")[1:-1]] for row in _table_lines(out)]
    assert [c[:2] for c in cells if c[0]] == [["finetune", "finetune"], ["uce", "uce"], ["token-swap", "token-swap"]]
    assert [r["method"] for r in csv.DictReader(open(tmp_path / "c.csv"))] == ["finetune", "uce", "token-swap"]
    html = (tmp_path / "c.html").read_text()
    assert html.count("<circle") == 3 and all(f"<td>{m}</td>" in html for m in ("finetune", "uce", "token-swap"))


def test_sort_follows_each_metrics_direction(runs, capsys):
    def order(metric):
        assert main(["compare", *map(str, runs), "--sort", metric]) == 0
        return [line.split("│")[1].strip() for line in _table_lines(capsys.readouterr().out) if "lr0" in line]

    assert order("preservation") == ["lr0.0001", "lr0.0003", "lr0.001"]  # higher is better
    assert order("swap_success") == ["lr0.001", "lr0.0003", "lr0.0001"]


def test_results_json_paths_find_their_run_config(runs, capsys):
    assert main(["compare", str(runs[0] / "eval" / "results.json"), str(runs[2] / "eval" / "results.json")]) == 0
    assert "settings that differ: train.lr" in capsys.readouterr().out


def test_identical_runs_say_so_and_keep_distinct_labels(runs, capsys):
    assert main(["compare", str(runs[0]), str(runs[0])]) == 0
    out = capsys.readouterr().out
    assert "all settings equal" in out and "lr0.0001 (2)" in out


@pytest.mark.parametrize("args, needle", [
    (["--sort", "preservaton"], "did you mean 'preservation'"),
    (["--metrics", "swap_succes"], "did you mean 'swap_success'"),
])
def test_unknown_metric_is_a_one_line_error(runs, capsys, args, needle):
    assert main(["compare", str(runs[0]), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_missing_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err


def test_paired_json_against_the_first_run(runs, capsys):
    assert main(["compare", str(runs[1]), str(runs[0]), str(runs[1]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # stdout holds only the JSON
    assert [r["run"] for r in out["runs"]] == ["lr0.0003", "lr0.0001", "lr0.0003 (2)"]
    assert set(out["paired"]) == {"lr0.0001", "lr0.0003 (2)"}
    itself = out["paired"]["lr0.0003 (2)"]
    # no row differs; 20 rows still leave +-t(19) x 1/22 (half a row added to each cell of the 2 x 2 table)
    assert itself["preservation"] == {"diff": 0.0, "ci95": [-0.095137, 0.095137], "p": 1.0, "p_holm": 1.0,
                                      "n_pairs": 20, "n_clusters": 4, "discordant": [0, 0]}
    lower = out["paired"]["lr0.0001"]
    # lr 3e-4 -> 1e-4: swap 0.9 -> 0.5 (10 rows per direction: 18 -> 10 successes), preservation 0.95 -> 1.0
    swap = lower["swap_success"]
    assert swap["diff"] == pytest.approx(-0.4) and swap["discordant"] == [8, 0] and swap["n_pairs"] == 20
    # the failures sit in one prompt per direction: over 4 prompts the t interval holds 0, and the p
    # follows it (McNemar on the rows alone reads 2 x 0.5^8 = 0.008)
    assert swap["ci95"][0] < -0.4 < 0 < swap["ci95"][1] and 0.05 < swap["p"] <= swap["p_holm"]
    assert lower["preservation"]["diff"] == pytest.approx(0.05) and lower["preservation"]["discordant"] == [0, 1]
    assert "kid_vs_base" not in lower  # no per-prompt rows: not paired


def test_paired_table_and_html(runs, tmp_path, capsys):
    assert main(["compare", str(runs[1]), str(runs[0]), "--html", str(tmp_path / "c.html")]) == 0
    out = capsys.readouterr().out
    assert "paired vs lr0.0003" in out and "-0.400" in out
    html = (tmp_path / "c.html").read_text()
    assert "Paired differences against lr0.0003" in html and "lr0.0001" in table_rows(html, "data-paired")


def test_runs_evaluated_differently_cannot_be_compared(tmp_path, capsys):
    a = make_run(tmp_path, "a")
    b = make_run(tmp_path, "b")
    results = json.loads((b / "eval" / "results.json").read_text())
    results["sampler"]["steps"] = 50
    (b / "eval" / "results.json").write_text(json.dumps(results))
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different sampler settings" in err[0]
