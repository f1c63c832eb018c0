"""Errors a user can fix. The CLI prints their one-line message and exits with their code."""


class UserError(Exception):
    """Bad input: the message names the problem and the fix. Exit code 2."""

    exit_code = 2


class GateFailure(Exception):
    """A regression gate did not pass. Exit code 1."""

    exit_code = 1
