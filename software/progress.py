"""Progress bars for lowbit's long work (training, exploration, simulator runs), drawn by
``rich`` on standard error so results on standard output stay clean.

Library code takes a ``progress`` flag and uses :func:`bar`; with it off, or with
``lowbit -q``, nothing is drawn. On a terminal the bar redraws in place; elsewhere (a log
file, CI) rich prints it once when the work ends.
"""

import contextlib

__all__ = ["bar", "Bar"]


class Bar:
    """A running progress bar: :meth:`update` sets how much is done and a note (``loss
    0.31``, ``cached``)."""

    def __init__(self, progress, task):
        self._progress, self._task = progress, task

    def update(self, done=None, note=None, *, advance=None, total=None):
        if self._progress is None:
            return
        fields = {} if note is None else {"note": note}
        if total is not None:
            fields["total"] = total
        if advance is not None:
            self._progress.update(self._task, advance=advance, **fields)
        else:
            self._progress.update(self._task, completed=done, **fields)

    def steps(self, done, total):
        """:meth:`update` as a ``progress(done, total)`` callback (``run_model``'s)."""
        self.update(done, total=total)


@contextlib.contextmanager
def bar(total, label, enabled=True):
    """A progress bar of ``total`` steps (``None``: not known yet, :meth:`Bar.update` can
    set it) labelled ``label``, as a context manager that yields a :class:`Bar` (a no-op
    one when ``enabled`` is false)."""
    if not enabled:
        yield Bar(None, None)
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[note]}"))
    with Progress(*columns, console=Console(stderr=True, highlight=False),
                  transient=False) as progress:
        task = progress.add_task(label, total=total, note="")
        yield Bar(progress, task)
