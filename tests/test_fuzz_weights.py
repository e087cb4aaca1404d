"""Fuzz the weight loaders: corrupt copies of a real model and a real checkpoint never crash.

Seeded truncations, byte flips, ``.npy`` header edits, JSON structure edits and member edits of
``tinysr/weights/x3.npz`` and of a small checkpoint (``save_checkpoint``), plus truncations and
flips of a compressed ``.mat``. Each case goes through ``read_npz``/``load_weights``; a subset
also through ``infer.main`` and ``evaluate.main``. The only outcomes allowed: the file loads (exit
0), or a ``ValueError`` naming the file on one line (exit 2 with one line on stderr). Every case
runs under a time bound, so a hang fails instead of stalling the suite.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import signal
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinysr.cli import evaluate
from tinysr.cli import upscale as infer
from tinysr.nn.model import init_params
from tinysr.nn.serialization import read_npz
from tinysr.weights import BUNDLED_DIR, load_weights

try:  # tests/ as a package (rootdir on sys.path) or as a plain folder
    from tests.test_weights_safety import (json_member, npy_bytes, npz_members, small_checkpoint, tiny_image,
                                           write_npz_members)
except ImportError:
    from test_weights_safety import (json_member, npy_bytes, npz_members, small_checkpoint, tiny_image,
                                     write_npz_members)

REPO = Path(__file__).resolve().parents[1]
SEED = 20261201
CASES = 150       # per source file, through the loaders
CLI_EVERY = 6     # every 6th case also through infer.main and evaluate.main
CASE_SECONDS = 10  # generous: two cores are shared; a real hang runs far past it


class CaseTimeout(BaseException):
    """Not an Exception (nor an OSError, as TimeoutError is): no CLI handler can swallow it."""


@contextlib.contextmanager
def time_bound(seconds: float, what: str):
    def expire(signum, frame):
        raise CaseTimeout(f"{what}: still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# --------------------------------------------------------------------------------------------
# Mutations

WEIRD_SHAPES = ["()", "(0,)", "(-1,)", "(1000000000000,)", "(100000000000000000000,)", "(4, 1, 9, 9, 1)",
                "(64, 1, 9, 9)", "(1,)", "(2 ** 70,)", "'x'", "(1.5,)", "None"]
WEIRD_DESCRS = ["'<f4'", "'<f8'", "'>f4'", "'<f2'", "'|O'", "'<i4'", "'<U8'", "'|V4'", "'not a dtype'", "5",
                "[('a', '<f4')]"]
WEIRD_VALUES = [None, -1, 0, 1, 2 ** 70, -(2 ** 70), 1.5, float("nan"), float("inf"), -float("inf"), True, "x",
                "", [], {}, [1, 2], {"a": 1}, [[[[[]]]]]]


def _npy_header(raw: bytes) -> tuple[str, bytes] | None:
    """``(header dict text, data)`` of a version 1.0 ``.npy``, or None."""
    if raw[:8] != b"\x93NUMPY\x01\x00":
        return None
    n = int.from_bytes(raw[8:10], "little")
    return raw[10:10 + n].decode("latin1").strip(), raw[10 + n:]


def _edit_header(raw: bytes, rng) -> bytes:
    parsed = _npy_header(raw)
    if parsed is None:
        return raw[:20]
    text, data = parsed
    d = ast.literal_eval(text)
    parts = {"descr": repr(d["descr"]), "fortran_order": repr(d["fortran_order"]), "shape": repr(d["shape"])}
    field = rng.choice(["descr", "fortran_order", "shape", "drop", "flip"])
    if field == "shape":
        parts["shape"] = str(rng.choice(WEIRD_SHAPES))
    elif field == "descr":
        parts["descr"] = str(rng.choice(WEIRD_DESCRS))
    elif field == "fortran_order":
        parts["fortran_order"] = str(rng.choice(["True", "False", "1", "'yes'"]))
    elif field == "drop":
        parts.pop(str(rng.choice(list(parts))))
    header = "{" + ", ".join(f"'{k}': {v}" for k, v in parts.items()) + ", }"
    out = npy_bytes(header, data, version=(1, 0) if rng.random() < 0.8 else (2, 0))
    if field == "flip":  # bytes of the header text itself
        out = bytearray(out)
        for _ in range(int(rng.integers(1, 4))):
            out[int(rng.integers(0, min(len(out), 128)))] ^= int(rng.integers(1, 256))
        out = bytes(out)
    if rng.random() < 0.2:  # and data that is not what the header says
        out = out[:len(out) - int(rng.integers(1, 8))] if rng.random() < 0.5 else out + b"\0" * 4
    return out


def _mutate_json(value, rng, depth=0):
    """``value`` with one random structural change somewhere inside it."""
    if isinstance(value, dict) and value and depth < 4 and rng.random() < 0.7:
        key = str(rng.choice(sorted(value)))
        op = rng.random()
        if op < 0.2:
            return {k: v for k, v in value.items() if k != key}
        if op < 0.3:
            return {**value, "extra": 1}
        return {**value, key: _mutate_json(value[key], rng, depth + 1)}
    if isinstance(value, list) and value and depth < 4 and rng.random() < 0.7:
        i = int(rng.integers(len(value)))
        out = list(value)
        if rng.random() < 0.2:
            out.pop(i)
        else:
            out[i] = _mutate_json(out[i], rng, depth + 1)
        return out
    return WEIRD_VALUES[int(rng.integers(len(WEIRD_VALUES)))]


BYTE_EDITS = ("truncate", "flip", "flip_ends")
ZIP_EDITS = ("header", "json", "members")


def mutate(data: bytes, members: dict[str, bytes], rng, kinds=BYTE_EDITS + ZIP_EDITS) -> tuple[str, bytes | dict]:
    """One random corruption: ``(kind, file bytes)`` or ``(kind, members)`` for a re-zipped file."""
    kind = str(rng.choice(kinds))
    if kind == "truncate":
        return kind, data[:int(rng.integers(0, len(data)))]
    if kind in ("flip", "flip_ends"):
        out = bytearray(data)
        for _ in range(int(rng.integers(1, 9))):
            if kind == "flip":
                i = int(rng.integers(len(out)))
            else:  # the zip's local headers at the start or its central directory at the end
                i = int(rng.integers(0, 200)) if rng.random() < 0.5 else len(out) - 1 - int(rng.integers(0, 600))
            out[i] ^= int(rng.integers(1, 256))
        return kind, bytes(out)
    members = dict(members)
    names = list(members)
    if kind == "header":
        name = str(rng.choice(names))
        members[name] = _edit_header(members[name], rng)
    elif kind == "json":
        keys = [n for n in names if n.startswith("__")]
        name = str(rng.choice(keys))
        text = str(np.load(io.BytesIO(members[name]), allow_pickle=False)[()])
        members[name] = json_member(_mutate_json(json.loads(text), rng))
    else:
        op = rng.choice(["drop", "duplicate", "rename", "extra"])
        name = str(rng.choice(names))
        if op == "drop":
            members.pop(name)
        elif op == "rename":
            members[name.replace(".npy", "x.npy") if rng.random() < 0.5 else name[:-4]] = members.pop(name)
        elif op == "extra":
            members["extra.npy"] = members[name]
        else:
            return kind, [*members.items(), (name, members[name])]
    return kind, members


def _materialise(path: Path, mutated) -> None:
    if isinstance(mutated, bytes):
        path.write_bytes(mutated)
    elif isinstance(mutated, dict):
        write_npz_members(path, mutated)
    else:  # a list of (name, bytes) with a duplicate name
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Duplicate name"
            with zipfile.ZipFile(buf, "w") as zf:
                for name, data in mutated:
                    zf.writestr(name, data)
        path.write_bytes(buf.getvalue())


# --------------------------------------------------------------------------------------------
# Checks


def _loader_outcome(path: Path, what: str) -> str:
    """``"ok"`` or ``"refused"``; anything else (another exception, a multi-line message) fails."""
    outcomes = set()
    for load in (read_npz, load_weights) if path.suffix == ".npz" else (load_weights,):
        with time_bound(CASE_SECONDS, what):
            try:
                load(path)
                outcomes.add("ok")
            except ValueError as exc:
                msg = str(exc)
                assert path.name in msg and "\n" not in msg, f"{what}: {load.__name__}: {msg!r}"
                outcomes.add("refused")
    assert len(outcomes) == 1, f"{what}: the loaders disagree"
    return outcomes.pop()


def _cli_outcome(argv_main, argv, capsys, what: str) -> tuple[int, str]:
    with time_bound(CASE_SECONDS, what):
        rc = argv_main(argv)
    out, err = capsys.readouterr()
    assert rc == 0 or (rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err), \
        f"{what}: {argv_main.__module__} exit {rc}, stderr {err!r}"
    return rc, err


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz_src")
    ck = small_checkpoint(d / "ck.npz")
    return {"model": (BUNDLED_DIR / "x3.npz").read_bytes(), "checkpoint": ck.read_bytes()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz_in")
    img = tiny_image(d / "in.png")
    gt = d / "gt"
    gt.mkdir()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (27, 30, 3), dtype=np.uint8)).save(gt / "a.png")
    return img, gt


@pytest.mark.parametrize("source", ["model", "checkpoint"])
def test_fuzzed_npz_never_crashes_the_loaders_or_the_clis(tmp_path, capsys, sources, inputs, source):
    data = sources[source]
    src = tmp_path / "src.npz"
    src.write_bytes(data)
    members = npz_members(src)
    img, gt = inputs
    rng = np.random.default_rng([SEED, ["model", "checkpoint"].index(source)])
    f = tmp_path / "fuzz.npz"
    seen = {"ok": 0, "refused": 0}
    for case in range(CASES):
        kind, mutated = mutate(data, members, rng)
        _materialise(f, mutated)
        what = f"{source} case {case} ({kind})"
        outcome = _loader_outcome(f, what)
        seen[outcome] += 1
        if case % CLI_EVERY == 0:
            infer_argv = [str(img), "-o", str(tmp_path / "out"), "--overwrite", "--weights", str(f)]
            evaluate_argv = [str(gt), "--scale", "3", "--weights", str(f)]
            for main, argv in ((infer.main, infer_argv), (evaluate.main, evaluate_argv)):
                rc, err = _cli_outcome(main, argv, capsys, what)
                assert rc == (0 if outcome == "ok" else 2), f"{what}: loaders {outcome}, {main.__module__}: {err}"
    assert seen["refused"] > CASES // 2, seen  # the corruptions are real ones


def test_fuzzed_mat_never_crashes_the_loader(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    good = tmp_path / "good.mat"
    rng = np.random.default_rng(SEED + 2)
    scipy_io.savemat(str(good), {
        "weights_conv1": rng.standard_normal((81, 8)), "biases_conv1": np.zeros((8, 1)),
        "weights_conv2": rng.standard_normal((8, 1, 4)), "biases_conv2": np.zeros((4, 1)),
        "weights_conv3": rng.standard_normal((4, 25)), "biases_conv3": np.zeros((1, 1))}, do_compression=True)
    data = good.read_bytes()
    f = tmp_path / "fuzz.mat"
    for case in range(60):
        kind, mutated = mutate(data, {}, rng, BYTE_EDITS)
        f.write_bytes(mutated)
        _loader_outcome(f, f"mat case {case} ({kind})")


def _bad_files(tmp_path) -> list[Path]:
    x3 = (BUNDLED_DIR / "x3.npz").read_bytes()
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(x3[:len(x3) // 3])
    src = tmp_path / "x3.npz"
    src.write_bytes(x3)
    members = npz_members(src)
    huge = write_npz_members(tmp_path / "huge.npz", {
        **members, "conv1.bias.npy": npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (10**20,), }")})
    even = tmp_path / "even.npz"  # a 2x2 first layer: it used to load, then fail on every image
    config = {"f1": 2, "f2": 1, "f3": 5, "n1": 4, "n2": 3}
    np.savez(even, **init_params(config, init="he"), __config__=np.array(json.dumps(config)))
    state = write_npz_members(tmp_path / "state.npz", {**members, "__config__.npy": json_member([9, 1, 5])})
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 107 + b"\x00\x01IM" + b"\x0f\0\0\0\xff\xff\xff\x7f" + b"x" * 40)
    return [trunc, huge, even, state, junk]


def test_real_processes_print_one_line_and_exit_2(tmp_path):
    img = tiny_image(tmp_path / "in.png")
    for bad in _bad_files(tmp_path):
        proc = subprocess.run([sys.executable, "infer.py", "--weights", str(bad), str(img), "-o", str(tmp_path / "o")],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, (bad.name, proc.returncode, proc.stderr)
        assert proc.stderr.startswith("infer.py: error: ") and bad.name in proc.stderr, proc.stderr
        assert not (tmp_path / "o").exists()
