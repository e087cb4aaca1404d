#!/usr/bin/env python3
"""Train SRCNN: see tinysr/cli/train.py or `python train.py --help`.

SIGINT/SIGTERM handlers come before tinysr's heavy imports (tinysr.cli.entry.run): a signal while they
load ends the process with one line and exit status 130, as one during training does.
"""

if __name__ == "__main__":
    from tinysr.cli.entry import run

    run("tinysr.cli.train", "train.py", unstarted="interrupted; nothing was trained")
