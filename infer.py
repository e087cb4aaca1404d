#!/usr/bin/env python3
"""Enlarge images with SRCNN: see tinysr/infer.py or `python infer.py --help`."""

import sys

from tinysr.infer import main

if __name__ == "__main__":
    sys.exit(main())
