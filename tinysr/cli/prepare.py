"""``tinysr prepare``: cut the authors' training patches from a folder of images into an HDF5 cache.

The patches and the cache are :mod:`tinysr.protocol.data`'s; this is only the command line. The
cache is reused when it is up to date, rebuilt when it is a stale or cut-short tinysr patch cache,
and any other file at ``--out`` is refused, never replaced. A signal while the cache is read or
written (inside h5py) is held until h5py is done, then ends the program in one line.
"""

from __future__ import annotations

if __name__ == "__main__":  # before the heavy imports: a signal while they load ends it in one line (status 130)
    from tinysr.cli.entry import run

    run("tinysr.cli.prepare", "python -m tinysr.cli.prepare")

from tinysr.cli.common import OneLineParser
from tinysr.cli.entry import signals_deferred
from tinysr.cli.failure import run_main
from tinysr.protocol.data import SCALES, load_or_build_cache

PROG = "tinysr prepare"


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run ``argv``; returns the exit status (0 ok, 2 bad input, 130 interrupted: :mod:`tinysr.cli.failure`)."""
    parser = OneLineParser(prog=prog, description="Cut SRCNN training pairs (33x33 inputs, 21x21 labels by "
                           "default) from a folder of images into an HDF5 cache.")
    parser.add_argument("--images", required=True, help="folder of training images (e.g. T91)")
    parser.add_argument("--scale", required=True, type=int, choices=SCALES, help="upscaling factor (2, 3, 4)")
    parser.add_argument("--out", required=True, help="HDF5 file to write (reused if up to date)")
    parser.add_argument("--input-size", type=int, default=33)
    parser.add_argument("--label-size", type=int, default=21)
    parser.add_argument("--stride", type=int, default=14)
    parser.add_argument("--degrade", default=None, metavar="jpeg:Q1-Q2[xN]",
                        help="JPEG-compressed inputs: each image downscaled as RGB, saved as a JPEG (4:2:0) at a "
                             "quality drawn from Q1..Q2 per image and copy, decoded; xN: N copies per image")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --degrade quality draws (default: 0)")
    args = parser.parse_args(argv)

    def work() -> int:
        # h5py swallows an exception raised in its callbacks: the signal waits for the next image or the write's end
        with signals_deferred() as check:
            inputs, _, _ = load_or_build_cache(args.images, args.scale, args.out, args.input_size,
                                               args.label_size, args.stride, check=check,
                                               degrade=args.degrade, seed=args.seed)
        print(f"{inputs.shape[0]} pairs -> {args.out}")
        return 0

    return run_main(prog, work)
