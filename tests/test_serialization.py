"""Model and checkpoint .npz: bit-exact round trips, atomic writes, clear errors."""

import json
import os

import numpy as np
import pytest

from tinysr.nn.model import SRCNN, parse_arch
from tinysr.nn.optim import Adam, MomentumSGD
from tinysr.nn.serialization import load_model, read_npz, save_checkpoint, save_model


def _state(epoch):
    """A training state as train.py writes it (what read_npz requires of a checkpoint)."""
    rng = np.random.default_rng(1)
    return {"epoch": epoch, "best_psnr": -float("inf"), "elapsed": 1.5, "rng": rng.bit_generator.state}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_model_round_trip_is_bit_exact(tmp_path, dtype):
    m = SRCNN.from_arch("9-5-5", n1=8, n2=4, init="he", seed=3, dtype=dtype)
    path = save_model(tmp_path / "m.npz", m, meta={"scale": 3})
    back = load_model(path, dtype=dtype)
    assert back.config == m.config and back.arch == "9-5-5"
    for k, v in m.params.items():
        assert back.params[k].dtype == v.dtype
        np.testing.assert_array_equal(back.params[k], v)
    assert read_npz(path)["meta"] == {"scale": 3}
    assert not [f for f in os.listdir(tmp_path) if f != "m.npz"], "temporary file left behind"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_checkpoint_round_trip_with_velocities(tmp_path):
    m = SRCNN(n1=4, n2=3, init="he", seed=1)
    opt = MomentumSGD(m.params, lr={"conv1": 1e-2, "conv2": 1e-2, "conv3": 1e-3})
    x = np.random.default_rng(0).random((2, 1, 15, 15), dtype=np.float32)
    y = m.forward(x)
    m.backward(y)
    opt.step(m.params, m.grads)
    state = _state(7)
    save_checkpoint(tmp_path / "c.npz", m, opt, state)
    d = read_npz(tmp_path / "c.npz")
    assert d["state"] == state and d["optim"]["momentum"] == 0.9
    for k, v in opt.state_dict().items():
        np.testing.assert_array_equal(d["optim_state"][k], v)
    opt2 = MomentumSGD(m.params, lr=opt.lr)
    opt2.load_state_dict(d["optim_state"])
    np.testing.assert_array_equal(opt2.state_dict()["velocity.conv1.weight"], opt.state_dict()["velocity.conv1.weight"])
    # A checkpoint also loads as plain weights.
    np.testing.assert_array_equal(load_model(tmp_path / "c.npz").params["conv3.bias"], m.params["conv3.bias"])


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    m = SRCNN(n1=2, n2=2)
    path = save_model(tmp_path / "m.npz", m)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        save_model(path, SRCNN(n1=2, n2=2, init="he"))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]


def _write(tmp_path, arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


def _good_arrays():
    m = SRCNN(n1=2, n2=2)
    arrays = dict(m.params)
    arrays["__config__"] = np.array(json.dumps(m.config))
    return arrays


@pytest.mark.parametrize("mutate,match", [
    (lambda a: a.pop("conv2.bias"), "missing parameters.*conv2.bias"),
    (lambda a: a.__setitem__("conv1.weight", np.zeros((2, 1, 7, 7), np.float32)), "conv1.weight has shape"),
    (lambda a: a.__setitem__("conv1.bias", np.zeros(2, np.int32)), "dtype"),
    (lambda a: a.__setitem__("conv3.bias", np.array([np.nan], np.float32)), "NaN or Inf"),
    (lambda a: a.__setitem__("extra", np.zeros(1)), "unexpected entries.*extra"),
    (lambda a: a.pop("__config__"), "no __config__"),
    (lambda a: a.__setitem__("__config__", np.array("{not json")), "not valid JSON"),
])
def test_bad_model_files_are_refused_with_a_named_problem(tmp_path, mutate, match):
    arrays = _good_arrays()
    mutate(arrays)
    path = _write(tmp_path, arrays)
    with pytest.raises(ValueError, match=match) as e:
        load_model(path)
    assert "bad.npz" in str(e.value)


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(ValueError, match="corrupt.npz.*not a readable"):
        load_model(bad)
    good = save_model(tmp_path / "t.npz", SRCNN(n1=2, n2=2))
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="trunc.npz"):
        load_model(trunc)
    with pytest.raises(ValueError, match="no such file"):
        load_model(tmp_path / "absent.npz")


def test_model_constructor_and_arch_validation():
    assert parse_arch("9-3-5") == (9, 3, 5)
    for bad in ("9-1", "9-x-5", "8-1-5", "9-1-5-1"):
        with pytest.raises(ValueError, match="f1-f2-f3"):
            parse_arch(bad)
    with pytest.raises(TypeError, match="float16"):
        SRCNN(dtype=np.float16)
    with pytest.raises(ValueError, match="n1"):
        SRCNN(n1=0)
    with pytest.raises(ValueError, match="init"):
        SRCNN(init="xavier")
    m = SRCNN(n1=2, n2=2)
    with pytest.raises(ValueError, match="conv2.weight has shape"):
        m.set_params({**m.params, "conv2.weight": np.zeros((2, 2, 3, 3))})
    with pytest.raises(ValueError, match="missing"):
        m.set_params({"conv1.weight": m.params["conv1.weight"]})


def test_adam_checkpoint_round_trip(tmp_path):
    m = SRCNN(n1=4, n2=3, init="he", seed=1)
    opt = Adam(m.params, lr=1e-3)
    x = np.random.default_rng(0).random((2, 1, 15, 15), dtype=np.float32)
    for _ in range(2):
        m.backward(m.forward(x))
        opt.step(m.params, m.grads)
    save_checkpoint(tmp_path / "a.npz", m, opt, _state(1))
    d = read_npz(tmp_path / "a.npz")
    assert d["optim"]["type"] == "Adam" and d["optim"]["t"] == 2
    opt2 = Adam(m.params, lr=1e-3)
    opt2.load_state_dict(d["optim_state"], d["optim"])
    assert opt2.t == 2
    for k, v in opt.state_dict().items():
        np.testing.assert_array_equal(opt2.state_dict()[k], v)


def test_partial_optimiser_state_is_refused(tmp_path):
    arrays = _good_arrays()
    arrays["optim.velocity.conv1.weight"] = np.zeros_like(arrays["conv1.weight"])
    path = _write(tmp_path, arrays)
    with pytest.raises(ValueError, match="bad.npz: optimiser state 'velocity' covers"):
        load_model(path)
