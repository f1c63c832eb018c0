import csv
import shutil
from pathlib import Path

import pytest
from _fixtures_reports import make_run

from swapbench.cli import main
from swapbench.errors import UserError
from swapbench.reports.sweep import State, Sweep, grid, parse_axes, split_values

GRID = ["--set", "train.lr=1e-5,2e-5,5e-5", "--set", "train.max_steps=500,1000"]


@pytest.mark.parametrize("raw, values", [
    ("1e-4,3e-4", ["1e-4", "3e-4"]),
    ("[0.1,0.2],[0.3, 0.4]", ["[0.1,0.2]", "[0.3, 0.4]"]),
    ("'a,b',c", ["'a,b'", "c"]),
    ("42", ["42"]),
])
def test_split_values_respects_brackets_and_quotes(raw, values):
    assert split_values(raw) == values


@pytest.mark.parametrize("raw", ["1e-4,,3e-4", "[0.1,0.2", "'open"])
def test_split_values_rejects_broken_lists(raw):
    with pytest.raises(UserError):
        split_values(raw)


def test_grid_is_the_product_and_fixed_keys_stay_out_of_names():
    points = grid(parse_axes(["train.lr=1e-5,2e-5,5e-5", "train.max_steps=500,1000", "eval.seeds=2"]))
    assert len(points) == 6 and len({p.name for p in points}) == 6
    assert points[0].name == "lr-1e-5_max-steps-500" and points[-1].name == "lr-5e-5_max-steps-1000"
    assert points[1].overrides == ["eval.seeds=2", "train.lr=1e-5", "train.max_steps=1000"]
    same_tail = grid(parse_axes(["data.resolution=16,32", "eval.resolution=16,32"]))
    assert same_tail[1].name == "data.resolution-16_eval.resolution-32"
    with pytest.raises(UserError, match="given twice"):
        parse_axes(["train.lr=1", "train.lr=2"])


def test_list_prints_one_train_and_eval_command_per_point(tmp_path, capsys):
    assert main(["sweep", *GRID, "--out", str(tmp_path / "sw"), "--suite", "quick", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6
    assert lines[3] == (f"swapbench train --preset savanna --out {tmp_path}/sw --name lr-2e-5_max-steps-1000 "
                        f"--set train.lr=2e-5 --set train.max_steps=1000 && swapbench eval "
                        f"{tmp_path}/sw/lr-2e-5_max-steps-1000 --suite quick")
    assert not (tmp_path / "sw").exists()


def test_launcher_starts_every_command_in_several_processes(tmp_path, capsys):
    from swapbench.reports.sweep import Sweep, grid, parse_axes

    launcher = "torchrun --standalone --nproc_per_node 8"
    assert main(["sweep", *GRID, "--out", str(tmp_path / "sw"), "--launcher", launcher, "--point", "0", "--list"]) == 0
    line = capsys.readouterr().out.strip()
    assert (line.startswith(f"{launcher} -m swapbench train --preset savanna")
            and f" && {launcher} -m swapbench eval " in line)
    sweep = Sweep(grid(parse_axes(GRID[1::2])), tmp_path, "savanna", launcher=launcher)
    assert sweep.argv(["eval", "R"]) == ["torchrun", "--standalone", "--nproc_per_node", "8", "-m", "swapbench",
                                         "eval", "R"]


@pytest.mark.parametrize("args, needle", [
    (["--set", "train.lrr=1e-5,2e-5"], "did you mean 'train.lr'"),
    (["--set", "train.max_steps=10,ten"], "expects int"),
    ([*GRID, "--point", "6"], "outside the grid of 6 points"),
    ([], "needs at least one --set"),
])
def test_bad_sweeps_fail_before_training(tmp_path, capsys, args, needle):
    assert main(["sweep", *args, "--out", str(tmp_path / "sw")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "sw").exists()


def _sweep(out: Path) -> Sweep:
    return Sweep(grid(parse_axes(["train.lr=0.0001,0.0003", "train.max_steps=40"])), out, "savanna")


def test_point_state_follows_the_run_directory(tmp_path):
    sweep = _sweep(tmp_path)
    point = sweep.points[1]
    assert sweep.state(point) is State.TRAIN
    run = make_run(tmp_path, point.name, lr=0.0003, steps=40)
    assert sweep.state(point) is State.DONE and sweep.commands(point) == []
    (run / "eval" / "results.json").write_text('{"schema_version": 1, "metr')  # torn by a kill
    assert sweep.state(point) is State.EVALUATE
    (run / "train_summary.json").unlink()
    assert sweep.state(point) is State.RESUME
    assert sweep.commands(point)[0] == ["train", "--resume", str(run)]
    with pytest.raises(UserError, match=r"train.lr: 0.0003 -> 0.0001"):
        sweep.state(sweep.points[0].__class__(0, point.name, ["train.max_steps=40", "train.lr=0.0001"]))


def test_finished_points_are_skipped_and_compared(tmp_path, capsys):
    sweep = _sweep(tmp_path / "sw")
    for point, lr, share in zip(sweep.points, (0.0001, 0.0003), (0.5, 1.0), strict=True):
        make_run(tmp_path / "sw", point.name, lr=lr, steps=40, swap=share)
    args = ["sweep", "--set", "train.lr=0.0001,0.0003", "--set", "train.max_steps=40", "--out", str(tmp_path / "sw")]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.err.count("done, skipped") == 2
    assert captured.out.strip().splitlines()[-1] == str(tmp_path / "sw" / "compare.html")
    rows = list(csv.DictReader(open(tmp_path / "sw" / "compare.csv")))
    assert [(r["run"], r["train.lr"], r["swap_success"]) for r in rows] == [("lr-0.0001", "0.0001", "0.5"),
                                                                            ("lr-0.0003", "0.0003", "1.0")]


def test_failed_points_do_not_stop_the_others_and_exit_2(tmp_path, capsys):
    args = ["sweep", "--set", f"model.pretrained={tmp_path}/missing-a,{tmp_path}/missing-b",
            "--out", str(tmp_path / "sw")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "[1/2]" in err and "[2/2]" in err and "2 of 2 sweep points failed" in err
    assert not (tmp_path / "sw" / "compare.html").exists()


@pytest.mark.slow
def test_sweep_trains_and_evaluates_each_point_end_to_end(mini_world, tmp_path, monkeypatch, capsys):
    """Real `swapbench train` + `swapbench eval` children on the mini world, then a resume that does nothing."""
    monkeypatch.setenv("SWAPBENCH_WORLD", str(mini_world))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "sw"
    args = ["sweep", "--set", "train.lr=1e-4,3e-4", "--set", "train.max_steps=2", "--set", "data.subset_size=120",
            "--set", "train.batch_size=8", "--set", "eval.steps=2", "--set", "eval.seeds=1", "--suite", "quick",
            "--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    for name in ("lr-1e-4", "lr-3e-4"):
        assert (out / name / "eval" / "report.html").is_file() and (out / name / "train_summary.json").is_file()
    rows = list(csv.DictReader(open(out / "compare.csv")))
    assert [r["train.lr"] for r in rows] == ["0.0001", "0.0003"]
    assert all(0 <= float(r["swap_success"]) <= 1 and r["swap_success.n"] != "" for r in rows)

    shutil.rmtree(out / "lr-3e-4" / "eval")  # an evaluation lost: only that point's eval runs again
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "lr-1e-4: done, skipped" in err and "lr-3e-4: swapbench eval" in err and "swapbench train" not in err


def test_documented_sweep_commands_are_valid(tmp_path, monkeypatch, capsys):
    from _fixtures_reports import documented_commands

    from swapbench.cli import build_parser

    monkeypatch.chdir(tmp_path)
    commands = documented_commands(Path(__file__).parents[1] / "docs" / "sweeps.md")
    assert sum(c[0] == "sweep" for c in commands) >= 3
    for command in commands:
        build_parser().parse_args(command)
        if command[0] == "sweep":  # every key and value of every point must resolve
            assert main([*command, "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert any("--name lr-2e-5_max-steps-1000 --set train.lr=2e-5 --set train.max_steps=1000" in x for x in listed)
