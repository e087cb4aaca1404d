#!/usr/bin/env python3
"""Enlarge images with SRCNN: see tinysr/infer.py or `python infer.py --help`."""

import signal
import sys


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt  # ends like Ctrl-C: temporaries are removed on the way out


# Set before tinysr (and NumPy) are imported, so a signal during the imports ends in one line too.
signal.signal(signal.SIGTERM, _on_sigterm)

if __name__ == "__main__":
    try:
        from tinysr.infer import main

        status = main()
    except KeyboardInterrupt:
        print("infer.py: interrupted", file=sys.stderr)
        status = 130
    sys.exit(status)
