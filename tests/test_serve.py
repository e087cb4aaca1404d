"""``tinysr serve`` (tinysr/serve/server.py, tinysr/cli/serve.py): the server in-process over real
sockets, and as a real process.

Routes and nothing else; bounded bodies (413, 411); bad and oversized uploads (one message, no
work, no temporary left); the result's bytes equal ``tinysr upscale``'s file; uploads queue and
run one at a time; a client that goes away has its queued work dropped and its running work
stopped at the next tile. The page in a real browser: tests/test_serve_browser.py.
"""

from __future__ import annotations

import http.client
import io
import math
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinysr.cli import upscale as upscale_cli
from tinysr.atomic import temporary_name
from tinysr.ops.engine import Engine
from tinysr.serve.server import App, Server

ROOT = Path(__file__).resolve().parents[1]


class GatedEngine(Engine):
    """The real engine, one thread, each tile waiting for ``go``: lets a test hold a running
    enlargement at a known tile. ``tiles_run`` counts the tiles that ran."""

    def __init__(self):
        super().__init__(workers=1)
        self.started, self.go, self.tiles_run = threading.Event(), threading.Event(), 0

    def over_tiles(self, run, n, device, report):
        def gated(k):
            self.started.set()
            assert self.go.wait(30)
            self.tiles_run += 1
            run(k)

        super().over_tiles(gated, n, device, report)


@pytest.fixture
def start():
    """``start(**App options) -> Server`` on a free loopback port, serving on a thread; all closed after."""
    servers = []

    def _start(**kw):
        server = Server("127.0.0.1", 0, App(**kw))
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((server, thread))
        return server

    yield _start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(10)
        assert not server.app.root.exists()  # every temporary removed


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _image(h=20, w=28, channels=3, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = (np.sin(xx / 3.0) * 60 + yy * 4 + 60)[..., None] + rng.integers(0, 60, (h, w, channels))
    arr = np.clip(base, 0, 255).astype(np.uint8)
    return arr[:, :, 0] if channels == 1 else arr


def _conn(server) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)


def _get(server, path, method="GET", headers=None):
    conn = _conn(server)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


def _post(server, body: bytes, query="name=photo.png&scale=2", headers=None):
    conn = _conn(server)
    conn.request("POST", "/api/upscale?" + query, body=body,
                 headers={"Content-Type": "application/octet-stream", **(headers or {})})
    return conn, conn.getresponse()


def _messages(resp, until=None):
    """JSON lines of an upscale stream up to its end (or the first ``until`` state): ``(lines, png bytes or None)``."""
    lines = []
    while True:
        raw = resp.readline()
        if not raw:
            return lines, None
        msg = json.loads(raw)
        lines.append(msg)
        if msg["state"] == "done":
            data = resp.read(msg["size"])
            assert len(data) == msg["size"] and resp.read() == b""
            return lines, data
        if msg["state"] == "error" or msg["state"] == until:
            return lines, None


def _command_output(tmp_path, name: str, data: bytes, scale: int, denoise: str = "auto") -> tuple[str, bytes]:
    """``tinysr upscale NAME -s SCALE --denoise D -o OUT/``: the file it writes, name and bytes."""
    src = tmp_path / name
    src.write_bytes(data)
    out = tmp_path / f"cmd_{name}_{scale}_{denoise}"
    assert upscale_cli.main([str(src), "-s", str(scale), "--denoise", denoise, "-o", str(out), "-q"]) == 0
    (written,) = out.iterdir()
    return written.name, written.read_bytes()


def _error(resp, body, status, *words):
    assert resp.status == status, body
    assert resp.getheader("Content-Type") == "application/json"
    assert body.count(b"\n") == 1
    message = json.loads(body)["error"]
    for w in words:
        assert w in message, message
    return message


def _wait(predicate, seconds=10.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# -- routes ----------------------------------------------------------------------------------------

def test_the_page_and_its_files(start):
    server = start()
    resp, body = _get(server, "/")
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/html")
    assert b'<script src="/app.js"' in body and b'href="/style.css"' in body
    assert b"http" not in body.replace(b"http-equiv", b"")  # nothing from the internet
    csp = resp.getheader("Content-Security-Policy")
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    for path, ctype in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        resp, body = _get(server, path)
        assert resp.status == 200 and resp.getheader("Content-Type").startswith(ctype) and len(body) > 500
        assert b"http://" not in body and b"https://" not in body
    resp, body = _get(server, "/", method="HEAD")
    assert resp.status == 200 and body == b"" and int(resp.getheader("Content-Length")) > 500


def test_options_are_what_the_package_has(start):
    server = start(max_pixels=123456)
    resp, body = _get(server, "/api/options")
    opts = json.loads(body)
    assert resp.status == 200
    bundled = sorted(int(p.stem[1:]) for p in (ROOT / "tinysr" / "weights").glob("x*.npz"))
    assert bundled == [2, 3, 4]
    offered = [1.5, 2, 2.5, 3, 3.5, 4]  # the bundled scales and the halves between (any-size enlargement)
    assert opts["choices"] == [{"name": "scale", "label": "Scale", "values": offered, "default": 3},
                               {"name": "denoise", "label": "Denoise",
                                "values": ["auto", "none", "low", "medium", "high"], "default": "auto"}]
    assert opts["max_pixels"] == {str(s): 123456 for s in offered} and opts["format"] == "png"


@pytest.mark.parametrize("path", ["/index.html", "/static/app.js", "/../../etc/passwd", "/app.js/",
                                  "//etc/passwd", "/api", "/api/options/x", "/favicon.ico", "/%2e%2e/README.md"])
def test_other_paths_are_404(start, path):
    server = start()
    resp, body = _get(server, path)
    _error(resp, body, 404, "no such page")


@pytest.mark.parametrize("method,path,allow", [("POST", "/", "GET"), ("GET", "/api/upscale", "POST"),
                                               ("PUT", "/api/upscale", "POST"), ("DELETE", "/api/options", "GET"),
                                               ("OPTIONS", "/api/upscale", "POST")])
def test_other_methods_are_405(start, method, path, allow):
    server = start()
    resp, body = _get(server, path, method=method)
    _error(resp, body, 405, allow)
    assert resp.getheader("Allow") == allow


def test_other_sites_pages_are_refused(start):
    server = start()
    resp, body = _get(server, "/api/options", headers={"Host": "evil.example:80"})
    _error(resp, body, 403, "is not this server")
    conn, resp = _post(server, _png(_image()), headers={"Origin": "http://evil.example"})
    _error(resp, resp.read(), 403, "other sites")
    conn.close()
    resp, _ = _get(server, "/", headers={"Host": f"localhost:{server.server_port}"})
    assert resp.status == 200


# -- results -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("denoise", ["none", "high"])
def test_a_denoise_choice_gives_the_commands_bytes(start, tmp_path, denoise):
    buf = io.BytesIO()
    Image.fromarray(_image(17, 23, 3, seed=5)).save(buf, format="JPEG", quality=30)
    server = start()
    conn, resp = _post(server, buf.getvalue(),
                       query=urllib.parse.urlencode({"name": "q30.jpg", "scale": 2, "denoise": denoise}))
    assert resp.status == 200
    _, png = _messages(resp)
    conn.close()
    auto = _command_output(tmp_path, "q30.jpg", buf.getvalue(), 2)[1]  # auto picks "high" for q30
    assert png == _command_output(tmp_path, "q30.jpg", buf.getvalue(), 2, denoise)[1]
    assert (png == auto) == (denoise == "high")

@pytest.mark.parametrize("name,channels,fmt,scale", [("photo.png", 3, "PNG", 2), ("shot.jpg", 3, "JPEG", 3),
                                                     ("gray scan.png", 1, "PNG", 4), ("logo.png", 4, "PNG", 2),
                                                     ("wide.png", 3, "PNG", 2.5)])
def test_result_bytes_equal_the_command(start, tmp_path, name, channels, fmt, scale):
    buf = io.BytesIO()
    Image.fromarray(_image(17, 23, channels, seed=int(scale * 10))).save(buf, format=fmt)
    data = buf.getvalue()
    server = start()
    conn, resp = _post(server, data, query=urllib.parse.urlencode({"name": name, "scale": scale}))
    assert resp.status == 200
    lines, png = _messages(resp)
    conn.close()
    want_name, want = _command_output(tmp_path, name, data, scale)
    assert lines[-1]["name"] == want_name == f"{Path(name).stem}_srcnn_x{scale}.png"
    assert png == want
    running = [m for m in lines if m["state"] == "running"]
    assert running[-1]["done"] == running[-1]["total"] >= 1  # progress reached the last tile
    assert Image.open(io.BytesIO(png)).size == (math.ceil(23 * scale), math.ceil(17 * scale))
    assert _wait(lambda: list(server.app.root.iterdir()) == [])  # the temporaries are gone at once


def test_the_name_from_the_request_is_only_a_name(start, tmp_path):
    server = start()
    conn, resp = _post(server, _png(_image()), query="name=../../etc/evil%0a.png&scale=2")
    lines, png = _messages(resp)
    conn.close()
    assert lines[-1]["name"] == "evil_srcnn_x2.png" and png
    assert not (tmp_path.parent / "evil_srcnn_x2.png").exists()


# -- refused uploads: one message, nothing else --------------------------------------------------

def test_body_over_the_upload_limit_is_413(start):
    server = start(max_upload=1000)
    conn, resp = _post(server, b"\0" * 5000)
    _error(resp, resp.read(), 413, "the file is 5.0 kB, over this server's upload limit of 1.0 kB",
           "--max-upload")
    conn.close()
    assert server.app.counts == {"done": 0, "error": 0, "cancelled": 0, "dropped": 0}
    assert list(server.app.root.iterdir()) == []


def test_a_body_without_length_is_411(start):
    server = start()
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as s:
        s.sendall(b"POST /api/upscale?name=a.png HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        reply = s.makefile("rb").read()
    head, body = reply.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 411") and b"Content-Length" in json.loads(body)["error"].encode()


@pytest.mark.parametrize("data,words", [
    (b"not an image at all", ["photo.png: not a readable image"]),
    (b"", ["the upload is empty"]),
    (_png(_image())[:60], ["photo.png: not a readable image"]),  # truncated
])
def test_bad_uploads_get_one_message(start, data, words):
    server = start()
    conn, resp = _post(server, data)
    message = _error(resp, resp.read(), 400, *words)
    conn.close()
    assert str(server.app.root) not in message and "input" not in message  # never a temporary's path
    assert sum(server.app.counts.values()) == 0 and list(server.app.root.iterdir()) == []


def test_an_image_over_max_pixels_is_refused_from_its_header(start):
    server = start(max_pixels=400)
    conn, resp = _post(server, _png(_image(20, 21)))
    _error(resp, resp.read(), 413, "photo.png: 21x20", "over the limit", "tinysr serve --max-pixels")
    conn.close()
    conn, resp = _post(server, _png(_image(20, 20)))  # at the limit: enlarged
    assert _messages(resp)[0][-1]["state"] == "done"
    conn.close()


def test_a_scale_not_offered_is_refused(start):
    server = start()
    conn, resp = _post(server, _png(_image()), query="name=a.png&scale=5")
    _error(resp, resp.read(), 400, "scale '5' is not offered", "1.5, 2, 2.5, 3, 3.5, 4")
    conn.close()


# -- queue, disconnects ------------------------------------------------------------------------------

def test_two_uploads_queue_and_run_one_at_a_time(start, tmp_path):
    engine = GatedEngine()
    server = start(engine=engine, tile=16)
    a_data, b_data = _png(_image(20, 28, seed=1)), _png(_image(21, 19, seed=2))
    conn_a, resp_a = _post(server, a_data, query="name=a.png&scale=2")
    assert engine.started.wait(30)  # a is inside its first tile, held there
    conn_b, resp_b = _post(server, b_data, query="name=b.png&scale=2")
    assert json.loads(resp_b.readline()) == {"state": "queued", "position": 1}
    assert server.app._running is not None and server.app._running.name == "a.png"
    # the page stays responsive meanwhile
    assert _get(server, "/api/options")[0].status == 200
    engine.go.set()
    lines_a, png_a = _messages(resp_a)
    lines_b, png_b = _messages(resp_b)
    conn_a.close()
    conn_b.close()
    assert png_a == _command_output(tmp_path, "a.png", a_data, 2)[1]
    assert png_b == _command_output(tmp_path, "b.png", b_data, 2)[1]
    assert lines_b[-2]["state"] == "running" and lines_b[-2]["done"] == lines_b[-2]["total"] == 9
    assert server.app.counts["done"] == 2


def test_a_client_that_goes_away_cancels_its_work(start):
    engine = GatedEngine()
    server = start(engine=engine, tile=16)
    app = server.app
    conn_a, resp_a = _post(server, _png(_image(24, 24)), query="name=a.png&scale=2")  # 48x48: 9 tiles
    assert engine.started.wait(30)
    running = app._running
    conn_b, resp_b = _post(server, _png(_image(seed=3)), query="name=b.png&scale=2")
    assert json.loads(resp_b.readline())["state"] == "queued"
    assert len(list(app.root.iterdir())) == 2
    resp_b.close()
    conn_b.close()  # queued work: dropped, its upload removed
    assert _wait(lambda: app.counts["dropped"] == 1)
    assert _wait(lambda: len(list(app.root.iterdir())) == 1)
    resp_a.close()
    conn_a.close()  # running work: stops at its next tile
    assert _wait(lambda: running.cancelled)
    engine.go.set()
    assert _wait(lambda: app.counts["cancelled"] == 1)
    assert engine.tiles_run == 1  # the tile it was in, no more
    assert app.counts["done"] == 0 and list(app.root.iterdir()) == []


# -- the real process ----------------------------------------------------------------------------

def tinysr_program() -> list[str]:
    """The ``tinysr`` console script beside this interpreter (what a user runs), else ``python -m tinysr``."""
    script = Path(sys.executable).with_name("tinysr")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tinysr"]


PROG = "tinysr serve" if len(tinysr_program()) == 1 else "python -m tinysr serve"


def _serve(*args):
    proc = subprocess.Popen([*tinysr_program(), "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    return proc


def _url(proc) -> str:
    line = proc.stdout.readline()
    assert line.startswith(f"{PROG}: http://") and line.endswith(" (Ctrl-C to stop)\n"), line
    return line.split()[-4]


def test_the_command_serves_and_ends_on_ctrl_c_in_one_line(tmp_path):
    proc = _serve("--port", "0")
    try:
        url = _url(proc)
        host, port = url[len("http://"):].rstrip("/").rsplit(":", 1)
        assert host == "127.0.0.1"
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        data = _png(_image(seed=7))
        conn.request("POST", "/api/upscale?name=p.png&scale=2", body=data)
        lines, png = _messages(conn.getresponse())
        conn.close()
        assert png == _command_output(tmp_path, "p.png", data, 2)[1]
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err == f"{PROG}: stopped\n"


def test_a_non_loopback_host_is_warned_about():
    proc = _serve("--host", "0.0.0.0", "--port", "0")
    try:
        assert _url(proc).startswith("http://0.0.0.0:")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    lines = err.splitlines()
    assert lines[0].startswith(f"{PROG}: warning: listening on 0.0.0.0: anyone who can reach this machine")
    assert lines[1:] == [f"{PROG}: stopped"] and proc.returncode == 130


def test_a_taken_port_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve("--port", str(port))
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and out == ""
    assert err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err


def test_the_page_ships_in_the_package():
    """pyproject.toml's package data covers every file of tinysr/serve/static/."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11+")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "tinysr.serve" in config["packages"] and "tinysr.serve.static" in config["packages"]
    globs = config["package-data"]["tinysr.serve.static"]
    files = [p for p in (ROOT / "tinysr" / "serve" / "static").iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"index.html", "app.js", "style.css"}
    assert all(any(p.match(g) for g in globs) for p in files)


def test_open_hands_the_url_to_the_browser(tmp_path):
    """``--open`` calls the default browser (here $BROWSER: a command that writes down its argument)."""
    marker = tmp_path / "opened.txt"
    browser = f"{sys.executable} -c \"import sys; open(sys.argv[1], 'w').write(sys.argv[2])\" {marker} %s"
    proc = subprocess.Popen([*tinysr_program(), "serve", "--port", "0", "--open"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "BROWSER": browser})
    try:
        url = _url(proc)
        assert _wait(lambda: marker.exists() and marker.read_text() == url, 30)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 130


def test_a_failing_enlargement_is_one_message_and_the_worker_lives_on(start):
    """An error inside the work (here: a GPU backend on a machine without one) reaches the page as
    one line, and the next upload is served, not left waiting for a dead worker."""
    from tinysr.ops.backend import BackendError, resolve_backend

    try:
        resolve_backend("cupy")
        pytest.skip("CuPy runs here: the GPU backend would not fail")
    except BackendError:
        pass
    server = start(backend="cupy")
    for _ in range(2):
        conn, resp = _post(server, _png(_image()))
        lines, png = _messages(resp)
        conn.close()
        assert png is None and lines[-1]["state"] == "error" and "\n" not in lines[-1]["message"]
        assert "cupy" in lines[-1]["message"].lower()
    assert server.app.counts["error"] == 2


def test_temporaries_of_a_killed_server_are_removed_by_the_next(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    alive = temporary_name(tmp_path / "tinysr-serve", ".tmp")  # a running server's (this process): kept
    alive.mkdir()
    # the same name from a process that is gone (whatever else the name carries, e.g. a host token)
    stale = alive.with_name(alive.name.replace(f".{os.getpid()}.", f".{int(gone.stdout)}.", 1))
    assert stale != alive
    (stale / "x").mkdir(parents=True)
    (stale / "x" / "input").write_bytes(b"an upload")
    app = App()
    try:
        assert not stale.exists() and alive.exists()
        assert app.root.parent == tmp_path and app.root.name.startswith(f".tinysr-serve.{os.getpid()}.")
    finally:
        app.close()
    assert not app.root.exists()
