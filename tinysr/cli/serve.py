"""``tinysr serve``: a local web page to enlarge images (:mod:`tinysr.serve.server`).

Prints the page's address on stdout (``--port 0``: a free port, the address says which), and a
warning on stderr when ``--host`` is not a loopback address. Ctrl-C or SIGTERM: work in progress
stops at its next tile, temporaries are removed, one line on stderr, exit status 130. A port
that cannot be bound: one line, exit status 2.
"""

from __future__ import annotations

import sys
import threading

from tinysr.cli.common import OneLineParser, add_backend_and_tile, positive_int
from tinysr.cli.failure import run_main
from tinysr.cli.upscale import _pixels

PROG = "tinysr serve"


def build_parser(prog: str = PROG) -> OneLineParser:
    from tinysr.serve.server import DEFAULT_MAX_UPLOAD  # noqa: PLC0415

    p = OneLineParser(prog=prog, description="A local web page: drop images, compare, download "
                                             "(the same enlargement as tinysr upscale).")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; another address lets "
                        "anyone who can reach it use the page)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.add_argument("--max-pixels", type=_pixels, default=None, metavar="N",
                   help="refuse uploads larger than N pixels, as tinysr upscale --max-pixels (default: what "
                        "this machine's memory holds for the enlargement)")
    p.add_argument("--max-upload", type=_pixels, default=DEFAULT_MAX_UPLOAD, metavar="BYTES",
                   help=f"refuse uploaded files larger than this (default {DEFAULT_MAX_UPLOAD / 1e6:.0f}M)")
    add_backend_and_tile(p)
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads per image on --backend numpy (default: as tinysr upscale)")
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    made: list = []  # the App, then the Server: closed whatever happens (temporaries removed)

    def work() -> int:
        if not 0 <= args.port <= 65535:
            raise ValueError(f"--port must be 0..65535, got {args.port}")
        if args.max_upload < 1:
            raise ValueError("--max-upload must be at least 1 byte (request bodies are always bounded)")
        try:
            return _serve(args, prog, made)
        finally:
            if len(made) == 2:
                made[1].server_close()  # closes the App too
            elif made:
                made[0].close()

    return run_main(prog, work, interrupted="stopped")


def _serve(args, prog: str, made: list) -> int:
    from tinysr.ops.backend import resolve_backend  # noqa: PLC0415
    from tinysr.ops.engine import Engine  # noqa: PLC0415
    from tinysr.serve.server import App, Server, is_loopback  # noqa: PLC0415

    resolve_backend(args.backend)
    made.append(App(max_pixels=args.max_pixels, max_upload=args.max_upload,
                    backend=args.backend, tile=args.tile or None, engine=Engine(workers=args.threads)))
    try:
        made.append(Server(args.host, args.port, made[0]))
    except (OSError, OverflowError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ValueError(f"cannot listen on {args.host}:{args.port} ({reason}); choose another --port or --host") \
            from None
    server = made[1]
    url = server.url()
    if not is_loopback(args.host):
        print(f"{prog}: warning: listening on {args.host}: anyone who can reach this machine on the network can "
              "use this page (upload images and use its CPU)", file=sys.stderr, flush=True)
    print(f"{prog}: {url} (Ctrl-C to stop)", flush=True)
    if args.open:
        import webbrowser  # noqa: PLC0415

        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
    server.serve_forever(poll_interval=0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
