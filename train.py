#!/usr/bin/env python3
"""Train SRCNN: see tinysr/train.py or `python train.py --help`.

SIGINT/SIGTERM handlers come before tinysr's heavy imports (tinysr.entry.run): a signal while they
load ends the process with one line and exit status 130, as one during training does.
"""

if __name__ == "__main__":
    from tinysr.entry import run

    run("tinysr.train", "train.py", unstarted="interrupted; nothing was trained")
