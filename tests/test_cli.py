"""The command line itself: help texts, a closed stdout, a subcommand whose module does not import."""

import subprocess
import sys

import pytest

from swapbench import cli
from swapbench.cli import main


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_help_prints_percent_signs_once(command, capsys):
    # argparse %-formats help= strings but not descriptions: a "%%" there reaches the user as written
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "%%" not in out and f"usage: swapbench {command}" in out


def test_a_reader_that_goes_away_ends_the_command_without_a_traceback():
    """`swapbench fetch --check --json | head -1`: the pipe closes before the JSON is written."""
    proc = subprocess.Popen([sys.executable, "-m", "swapbench", "fetch", "--check", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait() == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_a_subcommand_whose_module_fails_to_import_says_why(tmp_path, monkeypatch, capsys):
    (tmp_path / "broken_command.py").write_text("from swapbench.eval import no_such_module  # noqa: F401\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "world", "broken_command")
    assert main(["world", "info", "--json"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice" not in err[0], err
    assert err[0].startswith("swapbench world: error: the command cannot load (ImportError: cannot import name "
                             "'no_such_module'")
    # the other commands still work, and --help lists the broken one as such
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "(cannot load: ImportError)" in capsys.readouterr().out
    assert main(["fetch", "--check", "--json"]) == 0
    with pytest.raises(ImportError, match="no_such_module"):
        main(["-v", "world", "info"])  # --verbose shows the real error with its traceback
