"""``python -m tinysr``: the ``tinysr`` command (:mod:`tinysr.command`), run as a whole program."""

from .entry import run

if __name__ == "__main__":
    run("tinysr.command", "python -m tinysr")
