"""``python -m tinysr``: the ``tinysr`` command (:mod:`tinysr.cli.command`), run as a whole program."""

from tinysr.cli.entry import run

if __name__ == "__main__":
    run("tinysr.cli.command", "python -m tinysr")
