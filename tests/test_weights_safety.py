"""Weight and checkpoint files never crash the loaders nor get silently replaced (issue #16, 6/12/13).

- ``tinysr bundle`` writes only where told (``--dest`` is required), replaces nothing
  without ``--overwrite``, and never the package's own weights without ``--into-package``.
- Crafted ``.npz`` files (a header claiming 10^12 or 10^20 elements, JSON of the wrong
  structure, unknown members) and ``.mat`` files are refused with a ``ValueError`` naming the
  file, which the CLIs print as one line with exit status 2.
- Impossible networks (an even kernel, too much shrink, absurd widths) are refused at load.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tinysr.cli.bundle
from tinysr import weights
from tinysr.cli import upscale as infer
from tinysr.cli.bundle import main as _bundle_main
from tinysr.nn import serialization
from tinysr.nn.model import PARAM_NAMES, SRCNN
from tinysr.nn.optim import Adam, MomentumSGD
from tinysr.nn.serialization import read_npz, save_checkpoint, save_model
from tinysr.weights import BUNDLED_DIR, load_weights

# --------------------------------------------------------------------------------------------
# Helpers (also used by tests/test_fuzz_weights.py)


def npy_bytes(header: str, data: bytes = b"", version=(1, 0)) -> bytes:
    """A ``.npy`` file with the literal header dict text ``header`` (padded as NumPy does)."""
    magic = b"\x93NUMPY" + bytes(version)
    lensize = 2 if version == (1, 0) else 4
    text = header.encode("latin1")
    pad = -(len(magic) + lensize + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    return magic + len(text).to_bytes(lensize, "little") + text + data


def npz_members(path) -> dict[str, bytes]:
    """The raw bytes of every member of an ``.npz`` (zip order)."""
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def write_npz_members(path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Path:
    """A well-formed zip (right CRCs) holding ``members``: what an edited file looks like."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    Path(path).write_bytes(buf.getvalue())
    return Path(path)


def json_member(obj) -> bytes:
    """The ``.npy`` bytes of a JSON entry as :mod:`tinysr.nn.serialization` writes it."""
    buf = io.BytesIO()
    np.save(buf, np.array(json.dumps(obj)))
    return buf.getvalue()


def real_state(epoch: int = 2) -> dict:
    """A training state as ``train.py`` writes it."""
    return {"epoch": epoch, "best_psnr": 30.5, "elapsed": 12.0,
            "rng": np.random.default_rng(4).bit_generator.state}


def small_checkpoint(path, optimizer: str = "adam") -> Path:
    """A real checkpoint of a tiny 9-1-5 network after two optimiser steps."""
    m = SRCNN(n1=4, n2=3, init="he", seed=2)
    opt = Adam(m.params, lr=1e-3) if optimizer == "adam" else MomentumSGD(m.params, lr=1e-3)
    x = np.random.default_rng(0).random((2, 1, 15, 15), dtype=np.float32)
    for _ in range(2):
        m.backward(m.forward(x))
        opt.step(m.params, m.grads)
    recipe = {"arch": "9-1-5", "optimizer": optimizer, "lr": [1e-3] * 3, "epochs": 2, "augment": False,
              "init_from": None, "threads": None, "dist_timeout": 300.0}
    return save_checkpoint(path, m, opt, real_state(), meta={"scale": 3, "recipe": recipe})


def tiny_image(path) -> Path:
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (8, 9, 3), dtype=np.uint8)).save(path)
    return Path(path)


def one_line_exit_2(rc: int, err: str) -> bool:
    return rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def _infer(tmp_path, weights_file, capsys):
    img = tiny_image(tmp_path / "in.png")
    rc = infer.main([str(img), "-o", str(tmp_path / "out"), "--weights", str(weights_file)])
    return rc, capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Item 6: tinysr.cli.bundle


@pytest.fixture
def run_dir(tmp_path):
    """A finished training run: last.npz (scale 3) and its log."""
    run = tmp_path / "run"
    run.mkdir()
    m = SRCNN(n1=4, n2=3, init="he", seed=5)
    opt = Adam(m.params, lr=1e-3)
    save_checkpoint(run / "last.npz", m, opt, real_state(2), meta={"scale": 3, "recipe": {"epochs": 2}})
    (run / "log.jsonl").write_text('{"epoch": 1, "loss": 0.5}\n{"epoch": 2, "loss": 0.4}\n')
    return run


@pytest.fixture
def package(tmp_path, monkeypatch):
    """tinysr.cli.bundle's idea of the package weights folder, pointed at a copy (the real one is
    never written by these tests, whatever code they run against)."""
    pkg = tmp_path / "pkg_weights"
    pkg.mkdir()
    for name in ("x3.npz", "x3_log.jsonl", "x3.md"):
        (pkg / name).write_bytes((BUNDLED_DIR / name).read_bytes())
    monkeypatch.setattr(tinysr.cli.bundle, "BUNDLED_DIR", pkg)
    return pkg


def bundle_main(argv) -> int:
    """The bundle CLI's exit status, a command-line error (argparse's SystemExit) included."""
    try:
        return _bundle_main(argv)
    except SystemExit as exc:
        return exc.code


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_bundle_without_dest_writes_nothing(run_dir, package, capsys):
    """README's ``tinysr bundle 3 RUN`` used to replace the package's x3.npz."""
    before = _snapshot(package)
    assert bundle_main(["3", str(run_dir)]) == 2
    assert one_line_exit_2(2, err := capsys.readouterr().err) and "--dest" in err
    assert _snapshot(package) == before


def test_bundle_refuses_the_package_folder_without_into_package(run_dir, package, capsys):
    before = _snapshot(package)
    for extra in ([], ["--overwrite"]):
        assert bundle_main(["3", str(run_dir), "--dest", str(package), *extra]) == 2
        err = capsys.readouterr().err
        assert one_line_exit_2(2, err) and "--into-package" in err and "x3.md" in err
    # the same folder by another spelling (a symlink) is the same folder
    link = package.parent / "alias"
    link.symlink_to(package)
    assert bundle_main(["3", str(run_dir), "--dest", str(link), "--overwrite"]) == 2
    assert "--into-package" in capsys.readouterr().err
    assert _snapshot(package) == before


def test_bundle_into_package_still_needs_overwrite_and_says_to_update_the_md(run_dir, package, capsys):
    before = _snapshot(package)
    assert bundle_main(["3", str(run_dir), "--dest", str(package), "--into-package"]) == 2
    assert "--overwrite" in capsys.readouterr().err and _snapshot(package) == before
    assert bundle_main(["3", str(run_dir), "--dest", str(package), "--into-package", "--overwrite"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(package / "x3.npz") and "x3.md" in err
    shipped = load_weights(package / "x3.npz")
    trained = read_npz(run_dir / "last.npz")["params"]["conv1.weight"]
    np.testing.assert_array_equal(shipped.params["conv1.weight"], trained)
    assert (package / "x3_log.jsonl").read_bytes() != before["x3_log.jsonl"]
    assert not [p for p in package.iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_the_real_package_folder_is_recognised(run_dir, capsys):
    assert tinysr.cli.bundle.is_package_weights(BUNDLED_DIR)
    assert tinysr.cli.bundle.is_package_weights(Path(weights.__file__).parent / "." / "..") is False
    x3 = BUNDLED_DIR / "x3.npz"
    before = x3.read_bytes()
    try:
        assert bundle_main(["3", str(run_dir), "--dest", str(BUNDLED_DIR), "--overwrite"]) == 2
        assert "--into-package" in capsys.readouterr().err
    finally:
        if x3.read_bytes() != before:  # only on code that still replaced it: put it back
            x3.write_bytes(before)
    assert x3.read_bytes() == before


@pytest.mark.parametrize("existing", ["x3.npz", "x3_log.jsonl"])
def test_bundle_replaces_existing_outputs_only_with_overwrite(run_dir, tmp_path, capsys, existing):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / existing).write_bytes(b"the user's own file")
    assert bundle_main(["3", str(run_dir), "--dest", str(dest)]) == 2
    err = capsys.readouterr().err
    assert one_line_exit_2(2, err) and "--overwrite" in err
    assert [p.name for p in dest.iterdir()] == [existing], "half a bundle written"
    assert (dest / existing).read_bytes() == b"the user's own file"
    assert bundle_main(["3", str(run_dir), "--dest", str(dest), "--overwrite"]) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["x3.npz", "x3_log.jsonl"]
    load_weights(dest / "x3.npz")


def test_bundle_bad_log_is_one_line(run_dir, tmp_path, capsys):
    (run_dir / "log.jsonl").write_text("")
    assert bundle_main(["3", str(run_dir), "--dest", str(tmp_path / "d")]) == 2
    assert one_line_exit_2(2, capsys.readouterr().err)
    assert not (tmp_path / "d").exists()


# --------------------------------------------------------------------------------------------
# Item 12: crafted .npz files


@pytest.fixture
def model_members(tmp_path):
    return npz_members(save_model(tmp_path / "good.npz", SRCNN(n1=4, n2=3, init="he", seed=1), meta={"scale": 3}))


@pytest.mark.parametrize("shape", ["(1000000000000,)", "(100000000000000000000,)", "(-1,)", "(4, 1, 9, 9, 1)"])
def test_member_header_claiming_a_huge_shape_is_refused_before_reading(tmp_path, capsys, model_members, shape):
    members = dict(model_members)
    members["conv1.bias.npy"] = npy_bytes(f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}", b"\0" * 16)
    bad = write_npz_members(tmp_path / "huge.npz", members)
    with pytest.raises(ValueError, match=r"huge\.npz.*conv1\.bias has shape"):
        read_npz(bad)
    assert one_line_exit_2(*_infer(tmp_path, bad, capsys))


@pytest.mark.parametrize("header", [
    "{'descr': '|O', 'fortran_order': False, 'shape': (4,), }",     # pickled objects
    "{'descr': '<f2', 'fortran_order': False, 'shape': (4,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (4,) }",      # right, but the data is short
    "{'descr': 'not a dtype', 'fortran_order': False, 'shape': (4,), }",
    "{'descr': '<f4', 'shape': (4,), }",
    "[1, 2, 3]",
])
def test_malformed_member_headers_are_one_line(tmp_path, capsys, model_members, header):
    members = dict(model_members)
    members["conv1.bias.npy"] = npy_bytes(header, b"\0" * 8)
    bad = write_npz_members(tmp_path / "hdr.npz", members)
    with pytest.raises(ValueError, match=r"hdr\.npz") as e:
        read_npz(bad)
    assert "\n" not in str(e.value)
    assert one_line_exit_2(*_infer(tmp_path, bad, capsys))


def test_a_fortran_order_or_deflated_file_still_loads(tmp_path, model_members):
    members = dict(model_members)
    w = np.asfortranarray(np.random.default_rng(0).random((4, 1, 9, 9), dtype=np.float32))
    buf = io.BytesIO()
    np.save(buf, w)
    members["conv1.weight.npy"] = buf.getvalue()
    f = write_npz_members(tmp_path / "f.npz", members, zipfile.ZIP_DEFLATED)
    np.testing.assert_array_equal(read_npz(f)["params"]["conv1.weight"], w)


@pytest.mark.parametrize("name", ["evil.npy", "conv1.weight", "optim.momentum.conv1.weight.npy", "../x.npy"])
def test_unknown_members_are_refused(tmp_path, model_members, name):
    members = {**model_members, name: b"junk that is never read"}
    with pytest.raises(ValueError, match=r"unexpected entries"):
        read_npz(write_npz_members(tmp_path / "unk.npz", members))


def test_other_zip_compressions_are_refused(tmp_path, model_members):
    with pytest.raises(ValueError, match=r"bz\.npz.*compression"):
        read_npz(write_npz_members(tmp_path / "bz.npz", model_members, zipfile.ZIP_BZIP2))


def _with_json(tmp_path, src: Path, key: str, value, name="edited.npz") -> Path:
    members = npz_members(src)
    members[f"{key}.npy"] = json_member(value)
    return write_npz_members(tmp_path / name, members)


def _good_optim():
    m = SRCNN(n1=4, n2=3)
    return Adam(m.params, lr=1e-3).hyperparameters(), MomentumSGD(m.params, lr=1e-3).hyperparameters()


def _edit(d: dict, **kw) -> dict:
    out = dict(d)
    for k, v in kw.items():
        if v is _DROP:
            out.pop(k)
        else:
            out[k] = v
    return out


_DROP = object()
_ADAM, _SGD = _good_optim()
_STATE = real_state()

BAD_STATES = [
    [], "epoch 3", None,
    _edit(_STATE, epoch=_DROP), _edit(_STATE, epoch="3"), _edit(_STATE, epoch=-1), _edit(_STATE, epoch=2.5),
    _edit(_STATE, epoch=True), _edit(_STATE, epoch=10 ** 30),
    _edit(_STATE, best_psnr="high"), _edit(_STATE, best_psnr=None), _edit(_STATE, best_psnr=float("nan")),
    _edit(_STATE, elapsed=-5.0), _edit(_STATE, elapsed=float("inf")), _edit(_STATE, elapsed=_DROP),
    _edit(_STATE, rng=_DROP), _edit(_STATE, rng={"seed": 1}), _edit(_STATE, rng=[1, 2]),
    _edit(_STATE, rng=_edit(_STATE["rng"], bit_generator="MT19937")),
    _edit(_STATE, rng=_edit(_STATE["rng"], state={"state": -1, "inc": 1})),
    _edit(_STATE, rng=_edit(_STATE["rng"], state={"state": 1.5, "inc": 1})),
    _edit(_STATE, rng=_edit(_STATE["rng"], state={"state": 2 ** 200, "inc": 1})),
    _edit(_STATE, rng=_edit(_STATE["rng"], has_uint32=7)),
    _edit(_STATE, rng=_edit(_STATE["rng"], uinteger=2 ** 40)),
]
BAD_ADAM = [
    [], None, {"type": "RMSprop"}, _edit(_ADAM, type=_DROP), _edit(_ADAM, type="MomentumSGD"),  # slots m, v
    _edit(_ADAM, lr=1e-3), _edit(_ADAM, lr={"conv1.weight": 1e-3}), _edit(_ADAM, lr={k: "x" for k in PARAM_NAMES}),
    _edit(_ADAM, lr={k: float("nan") for k in PARAM_NAMES}), _edit(_ADAM, lr={k: -1.0 for k in PARAM_NAMES}),
    _edit(_ADAM, t="2"), _edit(_ADAM, t=-1), _edit(_ADAM, t=10 ** 400), _edit(_ADAM, t=_DROP),
    _edit(_ADAM, betas=[0.9]), _edit(_ADAM, betas=[0.9, "x"]), _edit(_ADAM, betas=None),
    _edit(_ADAM, eps=0), _edit(_ADAM, eps=float("inf")),
]
BAD_SGD = [_edit(_SGD, momentum=_DROP), _edit(_SGD, momentum=float("nan")), _edit(_SGD, weight_decay="0"),
           _edit(_SGD, type="Adam")]


@pytest.mark.parametrize("state", BAD_STATES)
def test_malformed_training_state_is_refused(tmp_path, state):
    bad = _with_json(tmp_path, small_checkpoint(tmp_path / "ck.npz"), "__state__", state)
    with pytest.raises(ValueError, match=r"edited\.npz.*__state__"):
        read_npz(bad)


@pytest.mark.parametrize("optim", BAD_ADAM)
def test_malformed_adam_settings_are_refused(tmp_path, optim):
    bad = _with_json(tmp_path, small_checkpoint(tmp_path / "ck.npz"), "__optim__", optim)
    with pytest.raises(ValueError, match=r"edited\.npz.*optimiser"):
        read_npz(bad)


@pytest.mark.parametrize("optim", BAD_SGD)
def test_malformed_sgd_settings_are_refused(tmp_path, optim):
    bad = _with_json(tmp_path, small_checkpoint(tmp_path / "ck.npz", "sgd"), "__optim__", optim)
    with pytest.raises(ValueError, match=r"edited\.npz.*optimiser"):
        read_npz(bad)


@pytest.mark.parametrize("key,value", [("__meta__", [1, 2]), ("__meta__", "x"), ("__config__", [9, 1, 5]),
                                       ("__config__", {"f1": 9, "f2": True, "f3": 5, "n1": 4, "n2": 3})])
def test_malformed_model_json_is_refused(tmp_path, capsys, model_members, key, value):
    members = {**model_members, f"{key}.npy": json_member(value)}
    bad = write_npz_members(tmp_path / "j.npz", members)
    with pytest.raises(ValueError, match=r"j\.npz"):
        read_npz(bad)
    assert one_line_exit_2(*_infer(tmp_path, bad, capsys))


def test_deeply_nested_json_is_refused(tmp_path, model_members):
    deep = ("[" * 100000 + "]" * 100000).encode("utf-32-le")
    members = {**model_members,
               "__meta__.npy": npy_bytes("{'descr': '<U200000', 'fortran_order': False, 'shape': (), }", deep)}
    with pytest.raises(ValueError, match=r"deep\.npz"):
        read_npz(write_npz_members(tmp_path / "deep.npz", members))


@pytest.mark.parametrize("recipe", [[1], {"arch": 5}, {"lr": "1e-3"}, {"lr": [1e-3, 1e-3]}, {"recipe": ["fast"]},
                                    {"optimizer": "rmsprop"}, {"scale": 5}, {"epochs": "10"}, {"augment": "yes"},
                                    {"momentum": float("nan")}, {"init_from": 3}])
def test_a_checkpoint_recipe_train_resume_cannot_use_is_refused(tmp_path, recipe):
    bad = _with_json(tmp_path, small_checkpoint(tmp_path / "ck.npz"), "__meta__", {"scale": 3, "recipe": recipe})
    with pytest.raises(ValueError, match=r"edited\.npz: __meta__ recipe"):
        read_npz(bad)


@pytest.mark.parametrize("log", ["x", [1, 2], {"epoch": 1}])
def test_a_checkpoint_log_that_is_not_records_is_refused(tmp_path, log):
    bad = _with_json(tmp_path, small_checkpoint(tmp_path / "ck.npz"), "__state__", {**real_state(), "log": log})
    with pytest.raises(ValueError, match=r"edited\.npz: training state .* log"):
        read_npz(bad)


def test_a_model_file_keeps_any_recipe(tmp_path, model_members):
    """Only a checkpoint's recipe is taken back by train.py; a model file's is free-form."""
    members = {**model_members, "__meta__.npy": json_member({"recipe": {"arch": 5}})}
    assert read_npz(write_npz_members(tmp_path / "m.npz", members))["meta"]["recipe"] == {"arch": 5}


def test_incomplete_checkpoints_are_refused(tmp_path):
    ck = npz_members(small_checkpoint(tmp_path / "ck.npz"))
    for drop in ("__state__.npy", "__optim__.npy"):
        bad = write_npz_members(tmp_path / "part.npz", {k: v for k, v in ck.items() if k != drop})
        with pytest.raises(ValueError, match=r"part\.npz: an incomplete checkpoint"):
            read_npz(bad)


def test_a_valid_checkpoint_resumes_as_train_does(tmp_path):
    """What train.py --resume does with a checkpoint read_npz accepted."""
    d = read_npz(small_checkpoint(tmp_path / "ck.npz"))
    m = SRCNN.from_params(d["config"], d["params"])
    opt = Adam(m.params, lr=1e-3)
    opt.load_state_dict({k: v.astype(m.dtype) for k, v in d["optim_state"].items()}, d["optim"])
    rng = np.random.default_rng(0)
    rng.bit_generator.state = d["state"]["rng"]
    assert opt.t == 2 and d["state"]["epoch"] == 2 and rng.bit_generator.state == real_state()["rng"]


def test_save_checkpoint_refuses_a_state_it_could_not_resume(tmp_path):
    m = SRCNN(n1=2, n2=2)
    with pytest.raises(ValueError, match="__state__"):
        save_checkpoint(tmp_path / "c.npz", m, Adam(m.params), {"epoch": 1})
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------
# Item 13: impossible networks are refused at load, naming the file


def _arrays_for(config):
    from tinysr.nn.model import init_params

    arrays = init_params(config, init="he")
    arrays["__config__"] = np.array(json.dumps(config))
    return arrays


@pytest.mark.parametrize("config,match", [
    ({"f1": 2, "f2": 1, "f3": 5, "n1": 4, "n2": 3}, "f1=2"),
    ({"f1": 9, "f2": 1, "f3": 4, "n1": 4, "n2": 3}, "f3=4"),
    ({"f1": 25, "f2": 9, "f3": 9, "n1": 1, "n2": 1}, "lose 20 pixels"),
    ({"f1": 27, "f2": 1, "f3": 1, "n1": 1, "n2": 1}, "f1=27"),
])
def test_impossible_kernels_in_npz_are_refused_at_load(tmp_path, capsys, config, match):
    bad = tmp_path / "even.npz"
    np.savez(bad, **_arrays_for(config))
    with pytest.raises(ValueError, match=rf"even\.npz.*{match}"):
        load_weights(bad)
    rc, err = _infer(tmp_path, bad, capsys)
    assert one_line_exit_2(rc, err) and "even.npz" in err


def test_absurd_widths_are_refused_before_any_data_is_read(tmp_path):
    members = npz_members(save_model(tmp_path / "m.npz", SRCNN(n1=4, n2=3)))
    members["__config__.npy"] = json_member({"f1": 9, "f2": 1, "f3": 5, "n1": 10 ** 9, "n2": 3})
    with pytest.raises(ValueError, match=r"wide\.npz.*implausibly large"):
        read_npz(write_npz_members(tmp_path / "wide.npz", members))
    with pytest.raises(ValueError, match="implausibly large"):
        serialization.check_config({"f1": 9, "f2": 5, "f3": 5, "n1": 1024, "n2": 1024}, "x")


def test_the_bundled_configs_pass():
    for scale in (2, 3, 4):
        serialization.check_config(read_npz(BUNDLED_DIR / f"x{scale}.npz")["config"], "bundled")


def _mat_vars(f1=9, f2=1, f3=5, n1=8, n2=4):
    return {"weights_conv1": np.zeros((f1 * f1, n1)), "biases_conv1": np.zeros((n1, 1)),
            "weights_conv2": np.zeros((n1, f2 * f2, n2)), "biases_conv2": np.zeros((n2, 1)),
            "weights_conv3": np.zeros((n2, f3 * f3)), "biases_conv3": np.zeros((1, 1))}


@pytest.mark.parametrize("kw,match", [({"f1": 2}, "f1=2"), ({"f2": 4}, "f2=4"), ({"n1": 1100}, "implausibly large"),
                                      ({"f1": 15, "f2": 13, "f3": 9}, "lose 17 pixels")])
def test_impossible_mat_networks_are_refused_at_load(tmp_path, capsys, kw, match):
    scipy_io = pytest.importorskip("scipy.io")
    bad = tmp_path / "odd.mat"
    scipy_io.savemat(str(bad), _mat_vars(**kw))
    with pytest.raises(ValueError, match=rf"odd\.mat.*{match}"):
        load_weights(bad)
    assert one_line_exit_2(*_infer(tmp_path, bad, capsys))


def test_mat_variables_that_unpack_too_large_are_refused(tmp_path, monkeypatch):
    scipy_io = pytest.importorskip("scipy.io")
    import tinysr.protocol.matlab_weights as mw

    f = tmp_path / "z.mat"
    scipy_io.savemat(str(f), _mat_vars(), do_compression=True)
    assert load_weights(f).config["n1"] == 8
    monkeypatch.setattr(mw, "MAX_MAT_BYTES", 4000)  # the file itself is smaller than this
    assert f.stat().st_size < 4000
    with pytest.raises(ValueError, match=r"z\.mat.*unpack to more than"):
        load_weights(f)


@pytest.mark.parametrize("edit", ["truncate", "flip", "junk"])
def test_corrupt_mat_files_are_one_line(tmp_path, capsys, edit):
    scipy_io = pytest.importorskip("scipy.io")
    good = tmp_path / "good.mat"
    scipy_io.savemat(str(good), _mat_vars(), do_compression=True)
    data = bytearray(good.read_bytes())
    if edit == "truncate":
        data = data[:len(data) // 2]
    elif edit == "flip":
        data[140:150] = bytes(b ^ 0xFF for b in data[140:150])
    else:
        data = b"MATLAB 5.0 MAT-file" + b"\0" * 109 + b"\0\x01IM" + b"\xff" * 64
    bad = tmp_path / "bad.mat"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"bad\.mat"):
        load_weights(bad)
    assert one_line_exit_2(*_infer(tmp_path, bad, capsys))
