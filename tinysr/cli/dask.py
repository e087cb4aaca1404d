"""``python -m tinysr.distributed.dask IN.zarr OUT.zarr -s 3``: the command line of the Zarr path
of :mod:`tinysr.distributed.dask` (which runs it under its own name, a thin alias).

Enlarges an image stored as Zarr chunk by chunk (:func:`~tinysr.distributed.dask.enlarge_zarr`),
or restores a huge float Y plane (:func:`~tinysr.distributed.dask.restore_zarr`); errors and
interruptions end it as every tinysr command (:mod:`tinysr.cli.failure`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinysr.cli.common import OneLineParser
from tinysr.cli.failure import run_main
from tinysr.distributed.dask import (DEFAULT_CHUNK, MIN_READ, PROG, _check_paths, connect, enlarge_zarr, read_zarr,
                                     restore_zarr)
from tinysr.weights import bundled_path, load_weights


def build_parser(prog: str = PROG) -> OneLineParser:
    p = OneLineParser(prog=prog, description="Enlarge an image stored as Zarr, chunk by chunk, colour in and "
                      "colour out: an integer array (H, W, C), uint8 gray, gray+alpha, RGB or RGBA, or uint16 "
                      "gray, becomes (sH, sW, C). A float (H, W) array is taken as a bicubic-upscaled Y plane "
                      "on [0, 1] and only restored by the network.")
    p.add_argument("src", help="input Zarr array: an integer image (H, W[, C]), or a float Y plane (H, W)")
    p.add_argument("dst", help="output Zarr array (written complete, then renamed into place)")
    p.add_argument("-s", "--scale", type=int, choices=(2, 3, 4), default=3,
                   help="enlargement factor; picks the bundled weights (default 3)")
    p.add_argument("--weights", help="tinysr .npz or the authors' .mat (default: bundled for --scale)")
    p.add_argument("--chunk", type=int, default=None,
                   help="output chunk edge in pixels (default: the input's read blocks, its chunks or several "
                        f"of them at least {MIN_READ} pixels a side, times the scale for an image, at most {DEFAULT_CHUNK})")
    p.add_argument("--scheduler", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run on the Dask scheduler at ADDRESS, or alone: on a local cluster "
                        "(default: threads in this process)")
    p.add_argument("--workers", type=int, default=None, help="workers of a local cluster (default: cores)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output written by this tool (never any other folder or array)")
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run ``argv``; returns the exit status (0 written, 2 bad input, 130 interrupted)."""
    args = build_parser(prog).parse_args(argv)

    def work() -> int:
        client = None
        try:
            model = load_weights(Path(args.weights) if args.weights else bundled_path(args.scale))
            if args.chunk is not None and args.chunk < 2 * model.shrink:
                raise ValueError(f"--chunk must be at least {2 * model.shrink} pixels")
            src, _ = _check_paths(args.src, args.dst, args.overwrite)  # before a local cluster takes seconds to start
            if args.scheduler:
                client = connect(args.scheduler, args.workers)
            if np.issubdtype(read_zarr(src).dtype, np.floating):
                print(restore_zarr(model, args.src, args.dst, chunk=args.chunk, overwrite=args.overwrite))
            else:
                print(enlarge_zarr(model, args.src, args.dst, args.scale, chunk=args.chunk, overwrite=args.overwrite))
            return 0
        finally:
            if client is not None:
                cluster = client.cluster if args.scheduler == "local" else None
                client.close()
                if cluster is not None:
                    cluster.close()

    return run_main(prog, work)

