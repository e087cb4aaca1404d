"""The local web page's server: the standard library's ``ThreadingHTTPServer``, one enlargement at a time.

Why the standard library: the page needs five fixed routes and one streamed response; a
framework would add a dependency and routes of its own for nothing (``http.server`` is
documented as not for public exposure, which is why it binds to loopback unless told otherwise
and accepts only the routes below).

Routes (anything else: 404; another method on a route: 405):

- ``GET /``, ``GET /app.js``, ``GET /style.css``: the page, read from the package's ``static/``
  folder once at start (no path from a request ever reaches the file system).
- ``GET /api/options``: JSON ``{"version", "choices": [{"name", "label", "values", "default"}],
  "max_pixels": {scale: pixels}, "max_upload": bytes, "format": "png"}``: what the page offers, read from the package (the
  bundled weights' scales; each choice is a field of :class:`tinysr.image.jobs.Options`).
- ``POST /api/upscale?name=FILE&scale=S``: the body is the image file's bytes (at most
  ``max_upload``; ``Content-Length`` required). A bad request (unknown choice, missing length,
  too large a body, an unreadable or too large image, a full queue) gets its status code (400,
  411, 413, 503) and ``{"error": "one line"}``. Otherwise status 200 and a stream of JSON lines:
  ``{"state": "queued", "position": k}`` (images ahead of it), ``{"state": "running", "done":
  d, "total": t}`` (output tiles), then ``{"state": "error", "message": ...}`` or ``{"state":
  "done", "name": "<stem>_srcnn_x<s>.png", "size": n}`` followed by the
  ``n`` bytes of the PNG.

The enlargement is :func:`tinysr.image.jobs.enlarge_job`, the function ``tinysr upscale`` runs,
on the uploaded bytes saved to a temporary folder under a fixed name, with the command's
options (PNG, its default tile, ``--max-pixels``): the PNG's bytes are those of ``tinysr
upscale FILE -s S``, and its name follows the command's rule (:func:`tinysr.image.jobs.plan_jobs`).
Uploads queue; one worker thread enlarges them in turn. A client whose connection closes (the
page closed, the image's Cancel) has its queued work dropped, and its running work stops at the
next output tile. Temporary folders are removed when their request ends and, whatever is left,
when the server closes.
"""

from __future__ import annotations

import dataclasses
import http.server
import ipaddress
import json
import select
import shutil
import socket
import tempfile
import threading
import urllib.parse
from collections import deque
from importlib import resources
from pathlib import Path

from tinysr import __version__
from tinysr.atomic import remove_stale_temporaries, temporary_name
from tinysr.image.enlarge import BundledModels, network_scale
from tinysr.image.inference import AUTO
from tinysr.image.io import ImageTooLarge, default_max_pixels, read_image
from tinysr.image.jobs import Job, Options, enlarge_job, plan_jobs
from tinysr.image.jpeg_quality import DENOISE_CHOICES, denoise_weights, file_level

DEFAULT_MAX_UPLOAD = 64_000_000  # bytes of one uploaded file
DEFAULT_QUEUE = 8  # images waiting at most (a further upload gets 503)
INPUT_NAME = "input"  # the temporary input's fixed name: nothing of the request names a file
STATIC = {  # route -> (file in static/, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
ROUTES = {**{route: "GET" for route in STATIC}, "/api/options": "GET", "/api/upscale": "POST"}
POLL_S = 0.2  # how often a waiting request checks its client and its work
# The page's own resources only: no scripts, styles or images from elsewhere.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class Cancelled(Exception):
    """The client of a running enlargement went away: raised from its progress callback."""


class BadUpload(ValueError):
    """A request refused before any work: ``status`` (HTTP code) and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def bundled_scales() -> list[int]:
    """The scales the package has weights for (``x2.npz`` -> 2), ascending."""
    from tinysr.weights import BUNDLED_DIR  # noqa: PLC0415

    return sorted(int(p.stem[1:]) for p in BUNDLED_DIR.glob("x*.npz") if p.stem[1:].isdigit())


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server to this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def display_name(name: str) -> str:
    """The uploaded file's name as the page gave it, reduced to a base name fit for messages and
    the download name (no folders, no control characters, at most 200 characters; ``image`` if empty)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()[:200]
    return base if base not in ("", ".", "..") else "image"


ROOT_NAME = "tinysr-serve"


def make_root() -> Path:
    """A new private temporary folder for this server's uploads (``.tinysr-serve.<pid>.<hex>.tmp`` in
    the system's temporary folder), after removing those of servers whose process is gone (``kill -9``)."""
    tmp = Path(tempfile.gettempdir())
    remove_stale_temporaries(tmp, ".tmp", name=ROOT_NAME, folders=True)
    root = temporary_name(tmp / ROOT_NAME, ".tmp")
    root.mkdir(mode=0o700)
    return root


class Work:
    """One upload: where its bytes are, its options, its state (guarded by the app's condition)."""

    def __init__(self, folder: Path, name: str, opts: Options):
        self.folder, self.name, self.opts = folder, name, opts
        self.state = "queued"  # -> running -> done | error | cancelled
        self.done = self.total = 0
        self.result: bytes | None = None
        self.error: str | None = None
        self.out_name = ""
        self.cancelled = False


class App:
    """The queue and its worker thread, the models, the page's files; the HTTP part is :class:`Handler`.

    ``max_pixels``: the largest input (width x height); ``None``: the command's default for each
    scale (:func:`tinysr.image.io.default_max_pixels`); 0: no limit. ``engine``: the models'
    :class:`tinysr.ops.engine.Engine` (CPU threads), ``backend``: ``numpy`` or ``cupy``. ``tile``:
    as ``tinysr upscale --tile`` (its default, ``auto``, gives the command's bytes for any tile).
    """

    def __init__(self, *, max_pixels: int | None = None, max_upload: int = DEFAULT_MAX_UPLOAD,
                 max_queue: int = DEFAULT_QUEUE, backend: str = "numpy", tile=AUTO, engine=None):
        self.max_pixels, self.max_upload, self.max_queue = max_pixels, int(max_upload), int(max_queue)
        self.backend, self.tile, self.engine = backend, tile, engine
        bundled = bundled_scales()  # the page offers these and the halves between (x2.5: the x3 network, then down)
        self.scales = sorted(set(bundled) | {s - 0.5 for s in bundled if s - 0.5 > 1})
        self.files = {route: (resources.files("tinysr.serve").joinpath("static", f).read_bytes(), ctype)
                      for route, (f, ctype) in STATIC.items()}
        self.root = make_root()
        self.cond = threading.Condition()
        self.queue: deque[Work] = deque()
        self.closing = False
        self.counts = {"done": 0, "error": 0, "cancelled": 0, "dropped": 0}  # for tests and the log
        self._models: dict[str, BundledModels] = {}  # by denoise level
        self._check_lock = threading.Lock()  # one upload decoded for its check at a time (memory)
        self._worker = threading.Thread(target=self._work_loop, name="tinysr-serve-worker", daemon=True)
        self._worker.start()

    # -- what the page offers ----------------------------------------------------------------------
    def choices(self) -> list[dict]:
        """The page's controls: each an :class:`Options` field with the values it may take."""
        fields = {f.name for f in dataclasses.fields(Options)}
        default = 3 if 3 in self.scales else (self.scales[0] if self.scales else None)
        wanted = [{"name": "scale", "label": "Scale", "values": self.scales, "default": default},
                  {"name": "denoise", "label": "Denoise", "values": list(DENOISE_CHOICES), "default": "auto"}]
        return [c for c in wanted if c["name"] in fields and c["values"]]

    def options(self) -> dict:
        return {"version": __version__, "choices": self.choices(), "format": "png",
                "max_pixels": {str(s): self.limit(s) for s in self.scales}, "max_upload": self.max_upload}

    def limit(self, scale: float) -> int:
        return int(default_max_pixels(scale)) if self.max_pixels is None else self.max_pixels

    # -- a request's work --------------------------------------------------------------------------
    def parse(self, query: dict) -> tuple[str, Options]:
        """The upload's display name and :class:`Options` from the query; ``BadUpload`` (400) for a bad choice."""
        values = {}
        for choice in self.choices():
            raw = query.get(choice["name"], [str(choice["default"])])[-1]
            match = [v for v in choice["values"] if str(v) == raw]
            if not match:
                raise BadUpload(400, f"{choice['label'].lower()} {raw!r} is not offered: choose "
                                     f"{', '.join(str(v) for v in choice['values'])}")
            values[choice["name"]] = match[0]
        name = display_name(query.get("name", ["image"])[-1])
        opts = Options(fmt="png", max_pixels=self.limit(values["scale"]), tile=self.tile, **values)
        return name, opts

    def admit(self, folder: Path, name: str, opts: Options) -> Work:
        """Check the saved upload (readable, within the size limit) and queue it; ``BadUpload`` otherwise.

        Messages name the upload by ``name``, never by its temporary path."""
        src = folder / INPUT_NAME
        with self._check_lock:
            try:
                pixels, _, _ = read_image(src, opts.max_pixels)
                del pixels
            except ImageTooLarge as exc:
                raise BadUpload(413, str(exc).replace(str(src), name).replace("--max-pixels",
                                                                              "tinysr serve --max-pixels")) from None
            except ValueError as exc:
                raise BadUpload(400, str(exc).replace(str(src), name)) from None
        work = Work(folder, name, opts)
        with self.cond:
            if self.closing:
                raise BadUpload(503, "the server is stopping")
            if len(self.queue) >= self.max_queue:
                raise BadUpload(503, f"{len(self.queue)} images are waiting already; add this one when one is done")
            self.queue.append(work)
            self.cond.notify_all()
        return work

    def position(self, work: Work) -> int:
        """Images ahead of ``work`` (queued or running); call with the condition held."""
        ahead = self.queue.index(work) if work in self.queue else 0
        return ahead + (1 if self._running is not None else 0)

    def cancel(self, work: Work) -> None:
        """The client went away: drop ``work`` if queued, stop it at its next tile if running."""
        with self.cond:
            if work.state == "queued" and work in self.queue:
                self.queue.remove(work)
                work.state = "cancelled"
                self.counts["dropped"] += 1
                shutil.rmtree(work.folder, ignore_errors=True)
            work.cancelled = True
            self.cond.notify_all()

    def new_folder(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.root))

    # -- the worker ------------------------------------------------------------------------------
    _running: Work | None = None

    def _model(self, scale: int, level: str):
        """The bundled network of ``scale`` and denoise ``level`` (each loaded once)."""
        if level not in self._models:
            from tinysr.ops.backend import resolve_backend  # noqa: PLC0415

            self._models[level] = BundledModels(resolve_backend(self.backend), self.engine,
                                                lambda s, level=level: denoise_weights(s, level))
        return self._models[level](scale)

    def _work_loop(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.closing:
                    self.cond.wait()
                if self.closing:
                    return
                work = self.queue.popleft()
                work.state, self._running = "running", work
                self.cond.notify_all()
            try:
                self._enlarge(work)
            finally:
                shutil.rmtree(work.folder, ignore_errors=True)
                with self.cond:
                    self._running = None
                    self.cond.notify_all()

    def _enlarge(self, work: Work) -> None:
        """``tinysr upscale``'s :func:`enlarge_job` on the saved upload, into its folder; the PNG's bytes kept."""
        src = work.folder / INPUT_NAME
        jobs, _ = plan_jobs([(src, Path("."))], work.folder, None, work.opts.scale, work.opts.fmt, False)
        target = jobs[0].target  # input_srcnn_x<s>.png: the command's name for a file called "input"
        out_name = Path(work.name).stem + target.name[len(INPUT_NAME):]

        def on_tile(done: int, total: int) -> None:
            with self.cond:
                if work.cancelled or self.closing:
                    raise Cancelled
                work.done, work.total = done, total
                self.cond.notify_all()

        try:
            level, _ = file_level(src, work.opts.denoise)  # as tinysr upscale picks it
            net = network_scale((1, 1), (work.opts.scale, work.opts.scale))  # as tinysr upscale -s picks it
            enlarge_job(Job(src, target), self._model(net, level), work.opts, on_tile=on_tile)
            result = target.read_bytes()
        except Cancelled:
            state, result, error = "cancelled", None, None
        except Exception as exc:  # the worker must outlive any one image: its error goes to its page
            message = "out of memory" if isinstance(exc, MemoryError) else " ".join(str(exc).split())
            message = message or type(exc).__name__
            state, result, error = "error", None, message.replace(str(src), work.name).replace(str(target), out_name)
        else:
            state, error = "done", None
        shutil.rmtree(work.folder, ignore_errors=True)  # before the result is out
        with self.cond:  # counted with the state, so a client that sees its end sees it counted
            work.state, work.result, work.error, work.out_name = state, result, error, out_name
            self.counts[state] += 1
            self.cond.notify_all()

    def close(self, timeout: float = 30.0) -> None:
        """Cancel everything, wait for the worker to stop (at its next tile), remove every temporary."""
        with self.cond:
            self.closing = True
            for work in self.queue:
                work.cancelled = True
            self.cond.notify_all()
        self._worker.join(timeout)
        shutil.rmtree(self.root, ignore_errors=True)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB" if n >= 1e3 else f"{n} bytes"


def peer_closed(sock: socket.socket) -> bool:
    """Whether the client closed its side (readable with no data left), or the socket failed."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class Handler(http.server.BaseHTTPRequestHandler):
    """The routes of the module docstring, for ``self.server.app``."""

    server_version = f"tinysr/{__version__}"
    sys_version = ""
    timeout = 60  # seconds a client may stall while sending its request

    @property
    def app(self) -> App:
        return self.server.app  # type: ignore[attr-defined]

    def log_message(self, format, *args):  # noqa: A002  (quiet: the terminal shows the one URL line)
        pass

    # -- responses -------------------------------------------------------------------------------
    def _headers(self, status: int, ctype: str, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self._headers(status, ctype, len(body))
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, (json.dumps(obj) + "\n").encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self.close_connection = True
        self._json(status, {"error": " ".join(message.split())})

    def _allowed(self) -> bool:
        """Refuse (403) requests a web page of another site makes through the browser (DNS
        rebinding, cross-site posts): on loopback the Host must be a loopback name, and any
        Origin must be this server's."""
        host = self.headers.get("Host", "")
        hostname = urllib.parse.urlsplit(f"//{host}").hostname or ""
        if is_loopback(self.server.server_address[0]) and not is_loopback(hostname):  # type: ignore[index]
            self._error(403, f"Host {host!r} is not this server; open http://127.0.0.1:{self.server.server_port}/")  # type: ignore[attr-defined]
            return False
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{host}":
            self._error(403, "requests from other sites' pages are refused")
            return False
        return True

    def _route(self, method: str) -> str | None:
        path = urllib.parse.urlsplit(self.path).path
        if path not in ROUTES:
            self._error(404, "no such page")
            return None
        if ROUTES[path] != method and not (method == "HEAD" and ROUTES[path] == "GET"):
            self.close_connection = True
            self.send_response(405)
            self.send_header("Allow", ROUTES[path])
            body = (json.dumps({"error": f"{path} takes {ROUTES[path]} only"}) + "\n").encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return None
        return path if self._allowed() else None

    # -- methods ---------------------------------------------------------------------------------
    def do_GET(self):  # noqa: N802
        path = self._route("GET")
        if path is None:
            return
        if path == "/api/options":
            self._json(200, self.app.options())
        else:
            body, ctype = self.app.files[path]
            self._send(200, body, ctype)

    def do_HEAD(self):  # noqa: N802
        self.do_GET()

    def do_POST(self):  # noqa: N802
        if self._route("POST") is not None:
            self._upscale()

    def _other(self):
        self._route(self.command)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other

    # -- POST /api/upscale -----------------------------------------------------------------------
    def _read_body(self, folder: Path) -> None:
        """Save the request body to ``folder/input``, within the upload limit; ``BadUpload`` otherwise."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise BadUpload(411, "send the image with a Content-Length")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise BadUpload(411, "send the image with a Content-Length") from None
        if length > self.app.max_upload:
            raise BadUpload(413, f"the file is {_size(length)}, over this server's upload limit of "
                                 f"{_size(self.app.max_upload)} (tinysr serve --max-upload)")
        if length <= 0:
            raise BadUpload(400, "the upload is empty")
        left = length
        with open(folder / INPUT_NAME, "wb") as f:
            while left:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    raise BadUpload(400, "the upload ended early")
                f.write(chunk)
                left -= len(chunk)

    def _upscale(self) -> None:
        app = self.app
        folder = app.new_folder()
        work = None
        try:
            try:
                name, opts = app.parse(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query))
                self._read_body(folder)
                work = app.admit(folder, name, opts)
            except BadUpload as exc:
                shutil.rmtree(folder, ignore_errors=True)  # before the reply: nothing is left once it is read
                self._error(exc.status, str(exc))
                return
            except (OSError, TimeoutError):
                return  # the client went away while sending
            self.close_connection = True  # the stream ends with the connection
            self._headers(200, "application/octet-stream")
            self._stream(work)
        finally:
            if work is None:
                shutil.rmtree(folder, ignore_errors=True)
            elif work.state in ("queued", "running"):  # the client went away: cancel() or the worker removes it
                app.cancel(work)

    def _line(self, obj) -> None:
        self.wfile.write((json.dumps(obj) + "\n").encode())
        self.wfile.flush()

    def _stream(self, work: Work) -> None:
        """Report ``work``'s state as it changes until it ends; a closed client cancels it."""
        app, last = self.app, None
        while True:
            with app.cond:
                if work.state not in ("queued", "running"):
                    break
                now = ({"state": "queued", "position": app.position(work)} if work.state == "queued" else
                       {"state": "running", "done": work.done, "total": work.total})
                if now == last:
                    app.cond.wait(POLL_S)
            try:
                if now != last:
                    self._line(now)
                    last = now
                if peer_closed(self.connection):
                    app.cancel(work)
                    return
            except OSError:
                app.cancel(work)
                return
        try:
            if work.state == "done":
                self._line({"state": "done", "name": work.out_name, "size": len(work.result)})
                self.wfile.write(work.result)
            elif work.state == "error":
                self._line({"state": "error", "message": work.error})
            else:
                self._line({"state": "error", "message": "cancelled: the server is stopping"})
        except OSError:
            pass


class Server(http.server.ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` holding an :class:`App` (``.app``); IPv6 for an IPv6 host."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, app: App):
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.app = app
        super().__init__((host.strip("[]"), port), Handler)

    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}/" if ":" in str(host) else f"http://{host}:{port}/"

    def server_close(self) -> None:
        super().server_close()
        self.app.close()
