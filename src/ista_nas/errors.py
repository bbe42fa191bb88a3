"""Exceptions. A ``UserError`` is a problem with the user's input; its message names the problem and the fix.

The CLI prints a ``UserError`` as one line and exits with code 2; a ``RunFailed`` (the run itself went wrong,
e.g. the loss diverged) is printed the same way with exit code 1. Neither shows a traceback.
"""


class IstaNasError(Exception):
    """Base class of every error this package raises on purpose."""

    exit_code = 1


class UserError(IstaNasError, ValueError):
    """Bad input: a flag, a file, a dataset or a run directory. The message says how to fix it."""

    exit_code = 2


class NotPermitted(UserError):
    """A file or folder the system would not let this user read or write: the fix is a permission, never a
    fallback (a checkpoint that cannot be read is not a damaged one)."""


class NotData(UserError):
    """A file that would run code when loaded (a pickle naming a function or class outside the tool's data
    types): refused before any of it runs, and never a reason to fall back to another file."""


class RunFailed(IstaNasError, RuntimeError):
    """The run could not go on (for example a NaN loss); the message says what state was kept."""

    exit_code = 1
