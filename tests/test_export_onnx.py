"""ONNX export (tinysr/cli/export_onnx.py): the graph equals ``SRCNN.predict`` in ONNX Runtime, and the
command line refuses what it must with one line and exit status 2.

Tests that need onnx or onnxruntime skip with the reason when they are absent (the ``test`` and
``onnx`` extras install them); the missing-onnx message is tested without them.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tinysr.cli import export_onnx as ex
from tinysr.nn.model import SRCNN
from tinysr.nn.serialization import save_model
from tinysr.protocol.paths import reference_models_dir
from tinysr.weights import bundled_path, load_weights

TOL = 1e-5  # max abs, Y in [0, 1]


def _onnx():
    return pytest.importorskip("onnx", reason="onnx is not installed (pip install \"tinysr[onnx]\")")


def _ort():
    return pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")


def _session(path):
    ort = _ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # the suite shares the machine's cores
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _images(n, h, w, seed):
    return np.random.default_rng(seed).random((n, 1, h, w), dtype=np.float32)


def _assert_matches_predict(model, path):
    """One session: 37x53 (N=1), then N=2 at 29x41 (dynamic N, H, W), each image against predict."""
    sess = _session(path)
    for x in (_images(1, 37, 53, 0), _images(2, 29, 41, 1)):
        (out,) = sess.run(None, {"y": x})
        assert out.shape == x.shape and out.dtype == np.float32
        for got, y in zip(out[:, 0], x[:, 0]):
            want = model.predict(y)
            assert np.abs(want).max() > 0.1  # a real output, not a near-zero one that any graph matches
            assert np.abs(got - want).max() <= TOL


def _one_line_error(capsys, rc, *words):
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.endswith("\n") and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def test_bundled_x3_via_the_cli_matches_predict(tmp_path, capsys):
    onnx = _onnx()
    out = tmp_path / "x3.onnx"
    assert ex.main(["-s", "3", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    props = {p.key: p.value for p in proto.metadata_props}
    assert (props["scale"], props["arch"], props["n1"], props["n2"]) == ("3", "9-1-5", "64", "32")
    assert props["source"] == "x3.npz"
    assert [op.version for op in proto.opset_import if op.domain == ""] == [ex.DEFAULT_OPSET]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 1, "H", "W"]
    assert [p.name for p in proto.graph.initializer if p.data_type == onnx.TensorProto.FLOAT] == \
        ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight", "conv3.bias"]
    _assert_matches_predict(load_weights(bundled_path(3)), out)


@pytest.mark.parametrize("model", [
    pytest.param(lambda: SRCNN(init="he", seed=1), id="9-1-5-he"),
    # a padded middle layer (each layer pads for itself) and even kernels (extra row/column after)
    pytest.param(lambda: SRCNN(9, 3, 5, n1=8, n2=4, init="he", seed=2), id="9-3-5-small"),
    pytest.param(lambda: SRCNN(4, 2, 3, n1=6, n2=5, init="he", seed=3), id="4-2-3-small"),
    pytest.param(lambda: SRCNN(9, 1, 5, n1=8, n2=4, init="he", seed=4, dtype=np.float64), id="float64-model"),
])
def test_random_model_matches_predict(tmp_path, model):
    onnx = _onnx()
    m = model()
    path = ex.export_onnx(m, tmp_path / "m.onnx", meta={"scale": 2, "note": {"a": 1}})
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    props = {p.key: p.value for p in proto.metadata_props}
    assert (props["arch"], props["scale"], props["note"]) == (m.arch, "2", '{"a": 1}')
    _assert_matches_predict(m.astype(np.float32), path)


@pytest.mark.parametrize("opset", [ex.MIN_OPSET, 18])
def test_other_opsets_match_predict(tmp_path, opset):
    onnx = _onnx()
    m = SRCNN(9, 3, 5, n1=8, n2=4, init="he", seed=5)
    path = ex.export_onnx(m, tmp_path / "m.onnx", opset=opset)
    assert [op.version for op in onnx.load(str(path)).opset_import] == [opset]
    _assert_matches_predict(m, path)


def test_opset_out_of_range(tmp_path, capsys):
    _onnx()
    with pytest.raises(ValueError, match="opset 10 is not supported"):
        ex.export_onnx(SRCNN(), tmp_path / "m.onnx", opset=ex.MIN_OPSET - 1)
    out = tmp_path / "cli.onnx"
    _one_line_error(capsys, ex.main(["-s", "3", str(out), "--opset", str(ex.max_opset() + 1)]), "is not supported")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_never_replaces_unless_asked(tmp_path):
    _onnx()
    path = tmp_path / "m.onnx"
    path.write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        ex.export_onnx(SRCNN(), path)
    assert path.read_bytes() == b"mine" and list(tmp_path.iterdir()) == [path]
    ex.export_onnx(SRCNN(), path, overwrite=True)
    assert path.read_bytes() != b"mine" and list(tmp_path.iterdir()) == [path]


def test_cli_refuses_an_existing_output_without_overwrite(tmp_path, capsys):
    _onnx()
    out = tmp_path / "x2.onnx"
    out.write_bytes(b"keep me")
    _one_line_error(capsys, ex.main(["-s", "2", str(out)]), str(out), "--overwrite")
    assert out.read_bytes() == b"keep me"
    dangling = tmp_path / "link.onnx"
    dangling.symlink_to(tmp_path / "nowhere")
    _one_line_error(capsys, ex.main(["-s", "2", str(dangling)]), "--overwrite")
    assert not (tmp_path / "nowhere").exists()
    assert ex.main(["-s", "2", str(out), "--overwrite"]) == 0
    assert _onnx().load(str(out)).metadata_props  # a real model now
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.onnx", "x2.onnx"]  # no temporaries left


@pytest.mark.parametrize("name", ["x3.onx", "x3", "x3.onnx.tmp", "x3.npz"])
def test_cli_refuses_a_bad_extension(tmp_path, capsys, name):
    _one_line_error(capsys, ex.main(["-s", "3", str(tmp_path / name)]), ".onnx")
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_a_missing_weights_file_or_folder(tmp_path, capsys):
    _onnx()
    missing = tmp_path / "nope.npz"
    _one_line_error(capsys, ex.main(["--weights", str(missing), str(tmp_path / "m.onnx")]), str(missing))
    _one_line_error(capsys, ex.main(["-s", "3", str(tmp_path / "no" / "m.onnx")]), "no such folder")
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_a_corrupt_weights_file(tmp_path, capsys):
    _onnx()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    _one_line_error(capsys, ex.main(["--weights", str(bad), str(tmp_path / "m.onnx")]), str(bad))
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("argv", [[], ["-s", "3", "--weights", "w.npz"], ["-s", "5"]])
def test_cli_needs_exactly_one_source(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as exc:
        ex.main([*argv, str(tmp_path / "m.onnx")])
    _one_line_error(capsys, exc.value.code)
    assert list(tmp_path.iterdir()) == []


def test_cli_weights_npz_keeps_its_scale(tmp_path, capsys):
    _onnx()
    m = SRCNN(9, 1, 5, n1=8, n2=4, init="he", seed=6)
    save_model(tmp_path / "mine.npz", m, meta={"scale": 4})
    out = tmp_path / "mine.onnx"
    assert ex.main(["--weights", str(tmp_path / "mine.npz"), str(out)]) == 0
    props = {p.key: p.value for p in _onnx().load(str(out)).metadata_props}
    assert (props["scale"], props["arch"], props["n1"], props["source"]) == ("4", "9-1-5", "8", "mine.npz")
    _assert_matches_predict(m, out)


def test_cli_authors_mat_with_a_5x5_middle_layer(tmp_path, capsys):
    _onnx()
    mat = reference_models_dir() / "9-5-5_imagenet" / "x3.mat"
    if not mat.is_file():
        pytest.skip(f"shared reference weights not found at {mat} (set TINYSR_SHARED)")
    out = tmp_path / "authors.onnx"
    assert ex.main(["--weights", str(mat), str(out)]) == 0
    props = {p.key: p.value for p in _onnx().load(str(out)).metadata_props}
    assert props["arch"] == "9-5-5" and "scale" not in props  # a .mat does not say its scale
    _assert_matches_predict(load_weights(mat), out)


def test_missing_onnx_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "tinysr\[onnx\]"'):
        ex.export_onnx(SRCNN(), tmp_path / "m.onnx")
    _one_line_error(capsys, ex.main(["-s", "3", str(tmp_path / "m.onnx")]), 'pip install "tinysr[onnx]"')
    assert list(tmp_path.iterdir()) == []


def test_module_runs_as_a_script(tmp_path):
    out = tmp_path / "x.txt"
    r = subprocess.run([sys.executable, "-m", "tinysr.cli.export_onnx", "-s", "3", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and ".onnx" in r.stderr, r.stderr
    assert r.stderr.startswith(ex.PROG)
