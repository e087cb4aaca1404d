#!/usr/bin/env python3
"""Train SRCNN: see tinysr/train.py or `python train.py --help`.

SIGINT/SIGTERM handlers come first, before any import of tinysr (numpy, h5py, ... take a second
or more): a signal while they load ends the process with one line and exit status 130, as one
during training does (tinysr.train.main installs its own handlers while it runs).
"""

import os
import signal
import sys

_signals = []
_raise = [True]  # while importing: a signal raises; once main() has run, it is only recorded


def _on_signal(signum, frame):
    _signals.append(signum)
    if _raise[0] and len(_signals) == 1:
        raise KeyboardInterrupt


if __name__ == "__main__":
    for _s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_s, _on_signal)
    code = None
    try:
        from tinysr.train import main

        _raise[0] = False
        if not _signals:  # one during the imports may have been swallowed by a library
            code = main()
    except KeyboardInterrupt:
        pass
    if code is None or (_signals and code != 130):
        sys.stderr.write("train.py: interrupted; nothing was trained\n" if code is None
                         else "train.py: interrupted\n")
        code = 130
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)
