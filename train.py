#!/usr/bin/env python3
"""Train SRCNN: see tinysr/train.py or `python train.py --help`."""

import sys

from tinysr.train import main

if __name__ == "__main__":
    sys.exit(main())
