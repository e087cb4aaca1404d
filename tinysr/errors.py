"""Exception types shared by every role of tinysr (library and command line alike)."""

from __future__ import annotations


class NoSuchFile(FileNotFoundError, ValueError):
    """A file tinysr was asked to read is not there; the message names it (``PATH: no such ...``).

    A ``FileNotFoundError`` (an ``OSError``), and a ``ValueError`` as bad input always was in
    tinysr, so ``except ValueError`` and ``except FileNotFoundError`` both catch it."""
