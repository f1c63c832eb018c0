"""Shared assertion for the CLI's bad-input contract: exit 2 and exactly one stderr line."""

from __future__ import annotations


def assert_one_line_error(capsys, code: int, *needles: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]
