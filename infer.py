#!/usr/bin/env python3
"""Enlarge images with SRCNN: see tinysr/cli/upscale.py or `python infer.py --help`.

SIGINT/SIGTERM handlers come before tinysr's heavy imports (tinysr.cli.entry.run): a signal while they
load ends the process with one line and exit status 130, as one during the work does.
"""

if __name__ == "__main__":
    from tinysr.cli.entry import run

    run("tinysr.cli.upscale", "infer.py")
