"""The ``tinysr`` command: one entry point for tinysr's tools.

    tinysr upscale photo.png -o out/        # tinysr.cli.upscale
    tinysr evaluate ../shared/data/Set5 -s 3
    tinysr --version

Each subcommand hands its arguments to that tool's own ``main(argv, prog)``, so every flag the
tool has is there, and its usage and messages name it ``tinysr SUBCOMMAND`` (``prog``). The
tool's module is imported only when its subcommand runs (``tinysr --version`` and ``tinysr
--help`` import no NumPy). Ctrl-C or SIGTERM, also while a tool is being imported, ends the
command with one line on stderr and exit status 130 (:mod:`tinysr.cli.entry`; as a program, without
the interpreter's shutdown, as ``python train.py`` ends); a bad command line gets one line and
exit status 2.
"""

from __future__ import annotations

import importlib
import sys

from tinysr import __version__
from tinysr.cli.entry import Interrupted, run, signals_raise

# subcommand -> (module, one-line description, arguments put before the user's)
COMMANDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "upscale": ("tinysr.cli.upscale", "enlarge images with SRCNN (colour in, colour out)", ()),
    "evaluate": ("tinysr.cli.evaluate", "PSNR/SSIM under the authors' protocol, or the paper's table", ()),
    "train": ("tinysr.cli.train", "train SRCNN on T91 patches, evaluating on Set5", ()),
    "prepare": ("tinysr.cli.prepare", "cut training patches from images into an HDF5 cache", ()),
    "bundle": ("tinysr.cli.bundle", "make bundled weights (xS.npz) from training runs", ()),
    "figures": ("tinysr.cli.figures", "draw training curves, first-layer filters, comparisons", ()),
    "export": ("tinysr.cli.export_onnx", "export weights as an ONNX model", ()),
    "serve": ("tinysr.cli.serve", "a local web page: drop images, compare before/after, download", ()),
}

DESCRIPTION = "SRCNN image super-resolution on NumPy (CPU) and CuPy (GPU)."


def help_text(prog: str) -> str:
    """The text of ``tinysr --help``: usage, the subcommands with one line each, the options."""
    width = max(len(name) for name in COMMANDS) + 2
    lines = [f"usage: {prog} [-h] [--version] COMMAND [ARGS ...]", "", DESCRIPTION, "", "commands:"]
    lines += [f"  {name:<{width}}{desc}" for name, (_, desc, _) in COMMANDS.items()]
    lines += ["", "options:", "  -h, --help  show this help and exit", "  --version   print the version and exit",
              "", f"'{prog} COMMAND --help' shows the options of a command."]
    return "\n".join(lines) + "\n"


def _error(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def _exit_status(code) -> int:
    """``sys.exit``'s argument as an exit status (a message is printed, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _run(name: str, args: list[str], prog: str) -> int:
    module_name, _, before = COMMANDS[name]
    sub_prog = f"{prog} {name}"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing == module_name:
            return _error(sub_prog, f"this installation of tinysr has no {module_name} module")
        return _error(sub_prog, " ".join(str(exc).split()))
    # A tool with its own subcommands (tinysr.protocol.data prepare) is named after this program: it adds
    # the subcommand's name itself.
    name_as = prog if before else sub_prog
    try:
        return _exit_status(module.main([*before, *args], prog=name_as))
    except SystemExit as exc:  # argparse's --help and usage errors
        return _exit_status(exc.code)


def _dispatch(argv: list[str], prog: str) -> int:
    if not argv:
        return _error(prog, f"a command is needed: {', '.join(COMMANDS)} ({prog} --help says more)")
    first, rest = argv[0], argv[1:]
    if first in ("-h", "--help"):
        sys.stdout.write(help_text(prog))
        return 0
    if first == "--version":
        print(f"{prog} {__version__}")
        return 0
    if first.startswith("-"):
        return _error(prog, f"unknown option {first!r} before the command ({prog} --help lists the options)")
    if first not in COMMANDS:
        import difflib  # noqa: PLC0415  (only for a mistyped command)

        near = difflib.get_close_matches(first, list(COMMANDS), n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        return _error(prog, f"unknown command {first!r}: {hint}choose from {', '.join(COMMANDS)}")
    return _run(first, rest, prog)


def main(argv: list[str] | None = None, prog: str = "tinysr") -> int:
    """Run ``tinysr ARGS`` (``argv``: the arguments after the program name; default
    ``sys.argv[1:]``) and return its exit status: the subcommand's, 2 for a bad command line,
    130 when interrupted (Ctrl-C or SIGTERM, also one a library swallowed)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        with signals_raise() as received:
            code = _dispatch(argv, prog)
        if not received or code == 130:
            return code
        what = received[0]
    except KeyboardInterrupt as exc:
        what = exc.signal if isinstance(exc, Interrupted) else "SIGINT"
    print(f"{prog}: {'terminated (SIGTERM)' if what == 'SIGTERM' else 'interrupted'}", file=sys.stderr)
    return 130


def program() -> None:
    """The ``tinysr`` console script: :func:`main` on ``sys.argv[1:]`` as a whole program
    (:func:`tinysr.cli.entry.run`): it ends as ``python train.py`` does, status 130 after a signal."""
    run("tinysr.cli.command", "tinysr")


if __name__ == "__main__":
    run("tinysr.cli.command", "python -m tinysr")
