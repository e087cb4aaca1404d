"""Progress of long work: a bar on a terminal, plain lines elsewhere, nothing but errors when quiet.

This is the one place that decides how tinysr's commands show progress. A :class:`Progress` is
built once per run from ``quiet`` and from whether its bar stream (stderr by default) is a
terminal:

* ``bar(total, desc, unit)``: a tqdm bar on that stream when it is a terminal (redrawn at most
  every :data:`REFRESH_S` seconds, cleared when closed), else a bar that does nothing: logs and
  pipes never get ``\\r`` or bar characters;
* ``counting(desc, unit, min_total)``: the same bar behind a callback ``on_step(done, total)``,
  the shape :func:`tinysr.image.enlarge.enlarge` (``on_tile``) and :func:`tinysr.protocol.evaluation.evaluate_dir`
  (``on_image``) call; ``None`` when no bar is shown, so the work skips the calls;
* ``line(text)``: one plain line (stdout by default), printed unless ``quiet``, through
  ``tqdm.write`` while bars are on (an open bar is redrawn below it). A closed stdout
  (``| head -1``) stops the printing, not the work.

Errors are never sent through it: they go to stderr in one line whatever ``quiet`` says.

The Python API maps its ``progress=`` argument to ``enlarge``'s ``on_tile`` with
:func:`tile_callback`. Training builds one ``Progress(quiet=args.quiet or not dist.is_root)``:
``line`` for the epoch lines and "building the patch cache", ``bar(steps, f"epoch {e}/{E}",
unit="step")`` with ``set_postfix_str(f"loss {loss:.4e}")`` for the steps.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

REFRESH_S = 0.5  # least seconds between redraws of a bar
TILE_BAR_MIN = 4  # an image with fewer tiles than this gets no tile bar (it would only flash)


def on_terminal(stream) -> bool:
    """Whether ``stream`` is a terminal (False for files, pipes, closed or odd streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class NoBar:
    """A bar that shows nothing: what :meth:`Progress.bar` gives off a terminal or when quiet."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def set_description_str(self, desc: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Progress:
    """How one run reports progress (see the module docstring).

    Args:
        quiet: print nothing (no lines, no bars); errors are the caller's, on stderr.
        bars: force bars on (``True``, e.g. a notebook whose stderr is no terminal) or off;
            ``None``: on when ``stream`` is a terminal. Never on when ``quiet``.
        stream: where bars go (default: ``sys.stderr`` as it is when used).
        out: where lines go (default: ``sys.stdout`` as it is when used).
    """

    def __init__(self, quiet: bool = False, *, bars: bool | None = None, stream: IO[str] | None = None,
                 out: IO[str] | None = None):
        self.quiet = bool(quiet)
        self._stream = stream
        self._out = out
        self.bars = not self.quiet and (on_terminal(self.stream) if bars is None else bool(bars))
        self.closed = False  # the line stream was closed under us (a broken pipe)

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stderr

    @property
    def out(self):
        return self._out if self._out is not None else sys.stdout

    def bar(self, total: int | None, desc: str = "", unit: str = "it"):
        """A tqdm bar of ``total`` steps labelled ``desc`` on a terminal, else a :class:`NoBar`.
        Close it (or use it as a context manager); a closed bar leaves no trace on the screen."""
        if not self.bars:
            return NoBar()
        from tqdm import tqdm  # noqa: PLC0415  (only when bars are shown)

        return tqdm(total=total, desc=desc, unit=unit, leave=False, file=self.stream, dynamic_ncols=True,
                    mininterval=REFRESH_S)

    @contextmanager
    def counting(self, desc: str, unit: str = "it", min_total: int = 1
                 ) -> Iterator[Callable[[int, int], None] | None]:
        """A callback ``on_step(done, total)`` driving a bar: the bar appears at the first call
        when ``total >= min_total`` and is closed when ``done == total`` or when the block ends.
        Yields ``None`` when no bar would be shown (off a terminal, quiet)."""
        if not self.bars:
            yield None
            return
        state: dict = {}

        def on_step(done: int, total: int) -> None:
            if "bar" not in state:
                state["bar"] = self.bar(total, desc, unit) if total >= min_total else NoBar()
            bar = state["bar"]
            if done > bar.n:
                bar.update(done - bar.n)
            if done >= total:
                bar.close()

        try:
            yield on_step
        finally:
            if "bar" in state:
                state["bar"].close()

    def line(self, text: str) -> None:
        """Print ``text`` as one line on the line stream unless quiet or that stream is closed."""
        if self.quiet or self.closed:
            return
        try:
            if self.bars:
                from tqdm import tqdm  # noqa: PLC0415

                tqdm.write(text, file=self.out)
                self.out.flush()
            else:
                print(text, file=self.out, flush=True)
        except (OSError, ValueError):  # stdout closed or full (> /dev/full): later lines go nowhere, the work goes on
            self.closed = True
            try:  # the interpreter's last flush then goes nowhere instead of raising again
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.out.fileno())
            except (OSError, ValueError, AttributeError):
                pass


@contextmanager
def tile_callback(progress, desc: str = "upscale", unit: str = "tile",
                  least: int = TILE_BAR_MIN) -> Iterator[Callable[[int, int], None] | None]:
    """What a ``progress=`` argument of the Python API means for :func:`tinysr.image.enlarge.enlarge`'s
    ``on_tile``: ``False``/``None`` -> ``None`` (no output); ``True`` -> a tile bar on stderr
    even where it is no terminal (a notebook), for images of at least :data:`TILE_BAR_MIN`
    tiles; a :class:`Progress` -> its tile bar; a callable -> itself, as ``on_tile(done, total)``.
    ``unit`` and ``least`` (the fewest steps that get a bar): ``"frame"`` and 1 for a video.
    """
    if progress is None or progress is False:
        yield None
    elif isinstance(progress, Progress) or progress is True:
        reporter = progress if isinstance(progress, Progress) else Progress(bars=True)
        with reporter.counting(desc, unit, least) as on_tile:
            yield on_tile
    elif callable(progress):
        yield progress
    else:
        raise TypeError(f"progress must be a bool, a tinysr.progress.Progress or a callable(done, total), "
                        f"got {type(progress).__name__}")
