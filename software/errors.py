"""The one exception type for a user's mistakes, and helpers that turn file errors into it.

Library code raises its own precise errors (``ProgramError``, ``TechError``, a
configuration's ``ValueError``); the command line turns the ones a user can cause into
:class:`UserError`, and :func:`lowbit.cli.main` prints each as one line,
``lowbit COMMAND: error: MESSAGE``, and exits with its :attr:`~UserError.status` (2 for bad
input: a path, a file, a flag, a value; 1 for work that ran and failed: a simulation that
failed its checks, a design that does not fit, a board that does not answer). No user
mistake ends in a traceback.
"""

import contextlib

__all__ = ["UserError", "MissingExtra", "reading", "writing", "refusing"]


class UserError(Exception):
    """A mistake in what the user asked for, reported without a traceback.

    Parameters
    ----------
    message : str
        The whole explanation, naming the file, flag or value at fault.
    status : int
        The command's exit status: 2 (the default) for bad input, 1 for work that ran and
        failed.
    """

    def __init__(self, message, status=2):
        super().__init__(message)
        self.status = status


class MissingExtra(UserError):
    """A command needs an optional part of lowbit that is not installed.

    Parameters
    ----------
    what : str
        What needs it (``"lowbit sim"``, ``"--plot"``).
    module : str
        The missing import (``"cocotb"``).
    extra : str
        The extra that installs it (``"sim"``): the message says
        ``pip install 'lowbit[sim]'``.
    """

    def __init__(self, what, module, extra):
        super().__init__(f"{what} needs {module}, which is not installed: "
                         f"pip install 'lowbit[{extra}]' (or 'lowbit[all]')")
        self.module, self.extra = module, extra


def _reason(error):
    return error.strerror or str(error)


@contextlib.contextmanager
def reading(path):
    """Inside, an ``OSError`` becomes ``UserError("cannot read PATH: REASON")``."""
    try:
        yield
    except OSError as error:
        raise UserError(f"cannot read {path}: {_reason(error)}") from None


@contextlib.contextmanager
def writing(path):
    """Inside, an ``OSError`` becomes ``UserError("cannot write PATH: REASON")``."""
    try:
        yield
    except OSError as error:
        raise UserError(f"cannot write {path}: {_reason(error)}") from None


@contextlib.contextmanager
def refusing(*types, prefix="", status=2):
    """Inside, an exception of ``types`` (default ``TypeError``, ``ValueError``) becomes a
    :class:`UserError` with its message (after ``prefix``, e.g. the file's name)."""
    try:
        yield
    except UserError:
        raise
    except (types or (TypeError, ValueError)) as error:
        raise UserError(f"{prefix}{error}", status) from None
