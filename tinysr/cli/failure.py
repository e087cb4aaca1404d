"""One way a tinysr command fails: one line on stderr, an exit status from one table.

Every subcommand's and ``python -m`` tool's ``main`` runs its work through :func:`run_main`,
under :func:`tinysr.cli.entry.signals_raise` (the one signal mechanism). An exception that ends
the work is mapped by :data:`STATUS` (first match wins):

- ``KeyboardInterrupt`` (SIGINT, SIGTERM, SIGHUP): status 130, ``PROG: LINE`` where the tool says what
  an interruption leaves (``interrupted``; e.g. the checkpoint kept), else passed on to the program
  that runs the tool (:func:`tinysr.cli.entry.run`, :func:`tinysr.cli.command.main`), which reports
  it in its own name, as for a signal while the tool is imported;
- :class:`CommandFailed` (e.g. training diverged): status 1, ``PROG: error: MESSAGE``;
- ``ValueError``, ``OSError``, ``ImportError``, ``MemoryError`` (``out of memory``), ``KeyError``,
  ``RuntimeError`` (bad arguments or files, a missing extra, a backend that cannot run): status 2,
  ``PROG: error: MESSAGE``, folded to one line;
- anything else is a bug: its traceback, unchanged.

This module imports nothing heavy.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from tinysr.cli.entry import INTERRUPTED, signals_raise

FAILED = 1  # the work ran and did not succeed
BAD_INPUT = 2  # bad arguments or files, a missing extra, a backend that cannot run, out of memory


class CommandFailed(RuntimeError):
    """The work ran and failed (exit status 1); the message says why."""


# exception types -> exit status; the first match wins (CommandFailed is a RuntimeError)
STATUS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], int], ...] = (
    (KeyboardInterrupt, INTERRUPTED),
    (CommandFailed, FAILED),
    ((ValueError, OSError, ImportError, MemoryError, KeyError, RuntimeError), BAD_INPUT),
)


def exit_status(exc: BaseException) -> int | None:
    """The exit status :data:`STATUS` gives ``exc``; ``None`` for a bug (not reported as a user error)."""
    for types, code in STATUS:
        if isinstance(exc, types):
            return code
    return None


def message(exc: BaseException, out_of_memory: str = "out of memory") -> str:
    """``exc``'s message folded to one line (a ``KeyError`` without its quotes; a ``MemoryError``
    as ``out_of_memory``, which says what to make smaller)."""
    if isinstance(exc, MemoryError):
        return out_of_memory
    text = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else exc
    return " ".join(str(text).split())


def run_main(prog: str, body: Callable[[], int], *, interrupted: str | Callable[[BaseException], str] | None = None,
             out_of_memory: str = "out of memory", tag: Callable[[], str] = lambda: "") -> int:
    """Run ``body()`` (a command's work; returns its exit status) and return the exit status.

    Under :func:`tinysr.cli.entry.signals_raise` (``replace=False``: the handlers of a host
    program, or of :func:`tinysr.cli.entry.run`, stay): the first SIGINT/SIGTERM raises where the
    work is. An exception :data:`STATUS` knows is printed as one line on stderr, ``PROG: error:
    TAG MESSAGE`` (``tag()``: e.g. an MPI rank's ``rank 1 of 2: ``), or for an interruption ``PROG:
    INTERRUPTED`` (``interrupted``: a string, or a function of the exception; ``None``: the
    interruption propagates to the program running the tool, which says it), and its status
    returned; any other exception (a bug) propagates. ``SystemExit`` (argparse) passes through.
    """
    try:
        with signals_raise(replace=False):
            return body()
    except BaseException as exc:  # noqa: BLE001  (mapped by the table; anything else is re-raised)
        code = exit_status(exc)
        if code is None or (code == INTERRUPTED and interrupted is None):
            raise
        if code == INTERRUPTED:
            line = interrupted(exc) if callable(interrupted) else interrupted
            print(f"{prog}: {line}", file=sys.stderr, flush=True)
        else:
            print(f"{prog}: error: {tag()}{message(exc, out_of_memory)}", file=sys.stderr)
        return code
