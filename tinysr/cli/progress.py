"""The command-line name of :mod:`tinysr.progress` (the same module object: the library's progress
bars and lines live outside ``tinysr.cli``, which the library never imports)."""

import sys

from tinysr import progress as _progress

sys.modules[__name__] = _progress
