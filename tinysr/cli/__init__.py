"""The command line: the ``tinysr`` command and its subcommands (upscale, evaluate, train, prepare,
bundle, figures, export), starting a program with one-line interruptions, the pieces the tools
share and progress bars.
"""
