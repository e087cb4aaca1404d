"""Starting a tinysr program: SIGINT/SIGTERM end it in one line, exit status 130, from its first moment.

Importing a tool (NumPy, numba, h5py, ...) takes a second or more; a signal meanwhile must end
the process like one during the work: one line on stderr, status 130, no traceback. The root
``train.py`` and ``infer.py`` and the ``tinysr`` command as a program
(:func:`tinysr.cli.command.program`) start through :func:`run`, which installs the handlers first
and imports the tool after. This module imports nothing heavy (``import tinysr`` is lazy), so
``from tinysr.cli.entry import run`` is cheap.

:func:`signals_raise` is the same handling for a block of code in-process (``tinysr.cli.command.main``);
:func:`exit_now` ends the process without the interpreter's shutdown after an interruption.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

# SIGHUP (the terminal closed, the session ended) ends a program as SIGTERM does.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
INTERRUPTED = 130  # exit status after SIGINT, SIGTERM or SIGHUP (128 + SIGINT, as shells report Ctrl-C)


def handled_signals() -> tuple[signal.Signals, ...]:
    """The :data:`SIGNALS` to handle now: SIGHUP only where it is not ignored (``nohup`` ignores
    it so that the program outlives its terminal, and that must stay so)."""
    return tuple(s for s in SIGNALS if s != signal.SIGHUP or signal.getsignal(s) != signal.SIG_IGN)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised where the program is, so it ends like Ctrl-C (clean-up runs);
    ``signal``: the signal's name (``"SIGINT"``, ``"SIGTERM"``)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.signal = name


_RECEIVED: list[str] = []  # the signals the installed handler of this module took


def signal_received() -> bool:
    """Whether a SIGINT/SIGTERM came while a handler of this module is installed. An error
    raised after one (a library that swallowed the interruption and failed instead) belongs to
    the interruption, not to the work: callers report it as such."""
    return bool(_RECEIVED)


def check_signal() -> None:
    """Raise :class:`Interrupted` if a signal came while a handler of this module is installed
    (also one whose exception a library swallowed): call it between units of work."""
    if _RECEIVED:
        raise Interrupted(_RECEIVED[0])


class _Handler:
    """The SIGINT/SIGTERM handler: records each signal's name in ``received``; the first raises
    :class:`Interrupted` while ``raising``, later ones are only recorded (no second exception
    lands in the clean-up of the first)."""

    def __init__(self):
        self.received: list[str] = []
        self.raising = True

    def __call__(self, signum, frame):
        self.received.append(signal.Signals(signum).name)
        _RECEIVED.append(self.received[-1])
        if self.raising and len(self.received) == 1:
            raise Interrupted(self.received[0])

    def install(self, replace: bool = True) -> dict:
        """Set this handler for :data:`SIGNALS` (with ``replace=False`` only where Python's own
        handler is set); returns the previous handlers ({} off the main thread, where handlers
        cannot be set)."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        _RECEIVED.clear()
        own = (signal.SIG_DFL, None, signal.default_int_handler)
        return {s: signal.signal(s, self) for s in handled_signals() if replace or signal.getsignal(s) in own}


@contextmanager
def signals_raise(replace: bool = True) -> Iterator[list[str]]:
    """Inside the block the first SIGINT or SIGTERM raises :class:`Interrupted` (a
    KeyboardInterrupt) where the code is; later ones are only recorded. Yields the list of the
    signals' names received (one whose exception a library swallowed is there too). The previous
    handlers come back after the block. Off the main thread: no handlers, the list stays empty.
    ``replace=False`` (a command's ``main`` called from a host program): a handler the host set
    stays, only Python's own are taken over."""
    handler = _Handler()
    old = handler.install(replace)
    try:
        yield handler.received
    finally:
        if old:
            _RECEIVED.clear()
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


@contextmanager
def signals_deferred() -> Iterator[Callable[[], None]]:
    """Inside the block a SIGINT/SIGTERM/SIGHUP is only recorded; the first one raises
    :class:`Interrupted` when the block ends (and :func:`signal_received` says so). For work a
    signal must not cut: h5py swallows an exception raised inside its callbacks (or leaves its
    lock held), and a file write is better finished than half cleaned up. Yields ``check()``,
    which raises at once if a signal came (call it between units of work, e.g. images). Off the
    main thread: nothing is changed, ``check`` does nothing."""
    handler = _Handler()
    handler.raising = False

    def check() -> None:
        if handler.received:
            handler.raising = False  # raised once: the rest of the block is clean-up
            raise Interrupted(handler.received[0])

    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    old = {s: signal.getsignal(s) for s in handled_signals()}
    for s in old:
        signal.signal(s, handler)
    raised = False
    try:
        yield check
    except Interrupted:
        raised = True
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        for name in handler.received:  # the handlers outside see it too (signal_received, run)
            _RECEIVED.append(name)
            if isinstance(h := old.get(signal.Signals[name]), _Handler):
                h.received.append(name)
    if handler.received and not raised:
        raise Interrupted(handler.received[0])


def exit_now(code: int) -> NoReturn:
    """End the process with ``code``: ``sys.exit`` unless it is 130; after an interruption, the
    streams flushed and then ``os._exit``, without the interpreter's shutdown (which waits for
    worker threads and runs library clean-up that can hang)."""
    if code != INTERRUPTED:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def run(module: str, prog: str, *, unstarted: str = "interrupted") -> NoReturn:
    """Run ``module``'s ``main(prog=prog)`` (on ``sys.argv[1:]``) as this process's program and
    exit with its status (:func:`exit_now`).

    SIGINT/SIGTERM handlers are installed before ``module`` is imported: a signal during the
    imports, or one that escapes ``main``, prints ``"{prog}: {unstarted}"`` (before ``main`` was
    called) or ``"{prog}: interrupted"`` on stderr, status 130. While ``main`` runs the first
    signal raises :class:`Interrupted` (a KeyboardInterrupt) unless ``main`` installs handlers of
    its own; once it has returned, signals are only recorded. A signal that came but did not end
    ``main`` (a library swallowed its exception) still ends the process with status 130.
    """
    handler = _Handler()
    handler.install()  # kept until the process ends: a signal during the exit is only recorded
    code, started, returned = None, False, False
    try:
        main = importlib.import_module(module).main
        if not handler.received:  # one during the imports may have been swallowed by a library
            started = True
            code = main(prog=prog)
            returned = True
    except KeyboardInterrupt:
        pass
    finally:
        handler.raising = False
    if not returned or (handler.received and code != INTERRUPTED):
        try:
            print(f"{prog}: {unstarted if not started else 'interrupted'}", file=sys.stderr)
        except (OSError, ValueError):  # stderr closed: the status still says it
            pass
        code = INTERRUPTED
    exit_now(code)


def evaluate_program() -> NoReturn:
    """The ``tinysr-evaluate`` console script: ``tinysr evaluate`` as a program, through :func:`run`
    (a signal while NumPy loads ends it in one line, status 130)."""
    run("tinysr.cli.evaluate", "tinysr-evaluate")
