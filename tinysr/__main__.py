"""``python -m tinysr``: the ``tinysr`` command (:mod:`tinysr.command`)."""

import sys

from .command import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m tinysr"))
