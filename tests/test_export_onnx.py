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


# -- tinysr export --rgb: the whole enlargement in one graph ----------------------------------------

def _photo(h, w, seed):
    """An RGB uint8 image with smooth areas, edges and noise (what tinysr.upscale meets)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / 4.0 + c) * 90 + yy * 2 + 40 * c for c in range(3)], axis=2)
    base[h // 3:h // 2] += 120  # a hard horizontal edge
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def _run_rgb(sess, imgs, uint8):
    """Images ``(H, W, 3)`` uint8 (one size) through an RGB graph -> ``(N, sH, sW, 3)`` on 0..255 (float for float)."""
    x = np.stack([im.transpose(2, 0, 1) for im in imgs])
    (out,) = sess.run(None, {"rgb": x if uint8 else (x / 255.0).astype(np.float32)})
    assert out.dtype == (np.uint8 if uint8 else np.float32)
    out = out.transpose(0, 2, 3, 1)
    return out.astype(np.float64) if uint8 else out.astype(np.float64) * 255.0


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("uint8", [False, True], ids=["float", "uint8"])
def test_rgb_model_equals_tinysr_upscale_within_one_grey_level(tmp_path, capsys, scale, uint8):
    import tinysr

    onnx = _onnx()
    out = tmp_path / f"x{scale}_rgb.onnx"
    assert ex.main(["--rgb", *(["--uint8"] if uint8 else []), "-s", str(scale), str(out)]) == 0
    proto = onnx.load(str(out))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["scale"] == str(scale) and props["input"].startswith("RGB")
    sess = _session(out)
    diffs = []
    for h, w, n in ((37, 29, 2), (1, 1, 1), (2, 3, 1), (16, 41, 1)):  # batches; 1- and 2-pixel edges mirrored
        imgs = [_photo(h, w, seed) for seed in range(n)]
        got = _run_rgb(sess, imgs, uint8)
        assert got.shape == (n, scale * h, scale * w, 3)
        for g, im in zip(got, imgs):
            want = tinysr.upscale(im, scale).astype(np.float64)
            diffs.append(np.abs(g - want).ravel())
    d = np.concatenate(diffs)
    assert d.max() <= 1.0  # one grey level
    assert d.mean() < (0.3 if not uint8 else 0.001)  # float: rounding alone (0.25 on average); uint8: a rare 1
    # and not equal by accident: plain bicubic is farther from it
    assert np.abs(_run_rgb(sess, [_photo(37, 29, 0)], uint8)[0] - _bicubic_255(_photo(37, 29, 0), scale)).max() > 5


def _bicubic_255(img, scale):
    from tinysr.protocol.imresize import imresize

    return np.clip(imresize(img / 255.0, scale), 0, 1) * 255.0


def _identity_srcnn():
    """A 9-1-5 SRCNN (n1 = n2 = 1) that returns its input Y: the RGB graph is then the bicubic alone."""
    m = SRCNN(9, 1, 5, n1=1, n2=1)
    for name, (kh, kw) in (("conv1", (9, 9)), ("conv2", (1, 1)), ("conv3", (5, 5))):
        w = np.zeros_like(m.params[f"{name}.weight"])
        w[0, 0, kh // 2, kw // 2] = 1.0
        m.params[f"{name}.weight"][...] = w
        m.params[f"{name}.bias"][...] = 0.0
    return m


def plain_resize_model(scale):
    """ONNX ``Resize`` alone (cubic, a = -0.5, half_pixel, the edge clamped): ``x`` (1, 3, H, W) float32 ->
    ``y`` (1, 3, sH, sW). bench/onnx_rgb_parity.py measures it too."""
    from onnx import TensorProto, helper, numpy_helper

    plain = helper.make_graph(
        [helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="cubic", cubic_coeff_a=-0.5,
                          coordinate_transformation_mode="half_pixel")], "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.zeros(0, np.float32), "roi"),
                     numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "scales")])
    return helper.make_model(plain, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_the_graphs_bicubic_is_matlabs_and_a_plain_resize_is_not(tmp_path, scale):
    """With the network an identity, the RGB graph is Matlab's imresize (to float32 rounding); ONNX
    Resize alone (indices clamped at the edge) differs from it in the outermost output rows and
    columns only: those whose taps reach 2 pixels outside, where Matlab mirrors."""
    _onnx()
    img = _photo(23, 31, 5)
    want = _bicubic_255(img, scale)
    path = ex.export_onnx(_identity_srcnn(), tmp_path / "bicubic.onnx", rgb_scale=scale)
    got = _run_rgb(_session(path), [img], uint8=False)[0]
    assert np.abs(got - want).max() < 0.02  # grey levels: float32 (its x3 cubic weights alone give up to 0.007)

    (tmp_path / "plain.onnx").write_bytes(plain_resize_model(scale).SerializeToString())
    x = (img.transpose(2, 0, 1)[None] / 255.0).astype(np.float32)
    (y,) = _session(tmp_path / "plain.onnx").run(None, {"x": x})
    y = np.clip(y[0].transpose(1, 2, 0), 0, 1) * 255.0
    diff = np.abs(y - want)
    edge = scale // 2  # output pixels i with (i + 0.5) / s - 0.5 < 0, on each side
    rows = diff[:, edge:-edge].max(axis=(1, 2))  # each row's largest difference away from the side edges
    cols = diff[edge:-edge].max(axis=(0, 2))
    for profile in (rows, cols):
        assert profile[:edge].min() > 0.1 and profile[-edge:].min() > 0.1  # the edges differ
        assert profile[edge:-edge].max() < 0.02  # the rest is Matlab's, to float32


def test_rgb_model_at_the_oldest_opset(tmp_path):
    import tinysr

    _onnx()
    path = ex.export_onnx(load_weights(bundled_path(2)), tmp_path / "m.onnx", rgb_scale=2, uint8=True,
                          opset=ex.MIN_OPSET)
    img = _photo(19, 14, 9)
    got = _run_rgb(_session(path), [img], uint8=True)[0]
    assert np.abs(got - tinysr.upscale(img, 2)).max() <= 1


def test_rgb_cli_refusals(tmp_path, capsys):
    _one_line_error(capsys, ex.main(["-s", "3", "--uint8", str(tmp_path / "m.onnx")]), "--uint8 applies to --rgb")
    mat = reference_models_dir() / "9-1-5_91images" / "x3.mat"
    if not mat.exists():
        pytest.skip(f"{mat} is not here (TINYSR_SHARED)")
    _onnx()
    _one_line_error(capsys, ex.main(["--rgb", "--weights", str(mat), str(tmp_path / "m.onnx")]),
                    "do not say which scale")
    assert list(tmp_path.iterdir()) == []


def test_the_onnx_extra_installs_what_readme_runs():
    """README's ONNX paragraphs run the exports in ONNX Runtime after ``pip install -e ".[onnx]"``."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11+")
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    extra = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["onnx"]
    names = {req.split(">")[0].split("=")[0].split("[")[0].strip() for req in extra}
    readme = (root / "README.md").read_text()
    assert 'pip install -e ".[onnx]"' in readme and "import numpy as np, onnxruntime as ort" in readme
    assert {"onnx", "onnxruntime"} <= names
