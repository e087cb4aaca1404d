"""The GPU training and inference path end to end: the raw kernels wired into the layers, the
optimiser and train.py / infer.py, against the NumPy path.

Every test takes the ``cupy`` fixture, so it runs ``[gpu]`` on a real GPU (skipping without
one) and ``[cuda-emulator]`` on the CPU, where tests/cupy_emulator.py runs the real kernel
sources. The launch and synchronisation counts exist only in the emulator.
"""

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from tinysr.cli import upscale as infer
from tinysr.cli import train
from tinysr.image.inference import restore_y
from tinysr.nn.layers import MSELoss
from tinysr.nn.model import SRCNN
from tinysr.nn.optim import Adam, MomentumSGD
from tinysr.nn.training import train_step
from tinysr.ops.backend import to_device, to_numpy

from .gradcheck import check_device_model_gradients


def _batch(rng, n=4, size=33, shrink=6, dtype=np.float32):
    x = rng.random((n, 1, size, size)).astype(dtype)
    return x, np.ascontiguousarray(x[:, :, shrink:size - shrink, shrink:size - shrink])


def test_train_step_launches_the_kernels_and_never_syncs(cuda_emulator):
    """One MomentumSGD step of 9-1-5 on the device: which kernels, how many, and no host reads."""
    emu = cuda_emulator
    rng = np.random.default_rng(0)
    model = SRCNN(init="he", seed=1, xp=emu)
    opt = MomentumSGD(model.params, lr=1e-4)
    x, t = (to_device(a, emu) for a in _batch(rng))
    loss_fn = MSELoss()
    loss_sum = emu.zeros((), dtype=np.float32)
    emu.reset_stats()
    for _ in range(3):
        loss_sum += train_step(model, loss_fn, opt, x, t)
    assert emu.STATS["syncs"] == 0, "the training step read device data on the host"
    per_step = Counter(emu.STATS["launches"])
    assert per_step == Counter({name: 3 for name in (
        "direct_forward_f32",       # layer 1, bias and ReLU fused
        "bias_relu_f32",           # layer 2 (a 1x1 GEMM), bias and ReLU in one pass
        "im2col_f32",              # layer 3's unfold (5x5)
        "mse_partial_f32", "mse_finalize_f32",
        "col2im_f32",              # layer 3's input gradient
        "relu_backward_f32",       # layer 2's ReLU (layer 1's too: counted twice below)
        "direct_grad_partial_f32",  # layer 1's weight and bias gradients: per-block partial sums
        "direct_grad_reduce_f32",   # ... added in a fixed order
    )}) + Counter({"relu_backward_f32": 3})  # the update: array operations on the flat buffers
    assert model.grads.flat is not None and opt.velocities["conv1.weight"].base is not None
    assert np.isfinite(float(loss_sum))


@pytest.mark.parametrize("padding", ["valid", "replicate"])
def test_device_gradients_match_finite_differences_f64(cupy, padding, tol=1e-6):
    """Central differences of the device forward pass against the device backward, in float64.

    Biases are random, not zero: with zero biases a pixel whose layer-1 channels are all cut by
    the ReLU gives layer 2 a pre-activation of exactly 0, a kink where central differences see
    half a slope.
    """
    check_device_model_gradients(cupy, dict(f1=5, f2=1, f3=3, n1=4, n2=3), (2, 1, 13, 11), padding, tol)


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-4), (np.float64, 1e-10)])
def test_device_forward_backward_match_host(cupy, dtype, tol):
    """The whole 9-1-5 forward and every parameter gradient, device against host."""
    rng = np.random.default_rng(3)
    x, t = _batch(rng, n=3, dtype=dtype)
    results = {}
    for name, xp in (("host", np), ("device", cupy)):
        model = SRCNN(init="he", seed=4, dtype=dtype, xp=xp)
        loss = MSELoss()
        value = loss.forward(model.forward(to_device(x, xp)), to_device(t, xp))
        model.backward(loss.backward())
        results[name] = {"loss": np.asarray(to_numpy(value)), **{k: to_numpy(v) for k, v in model.grads.items()}}
    for key, want in results["host"].items():
        got = results["device"][key]
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * float(np.abs(want).max()), err_msg=key)


def test_adam_on_device_matches_host(cupy):
    rng = np.random.default_rng(5)
    x, t = _batch(rng)
    weights = {}
    for name, xp in (("host", np), ("device", cupy)):
        model = SRCNN(init="he", seed=6, xp=xp)
        opt = Adam(model.params, lr=1e-3)
        for _ in range(3):
            train_step(model, MSELoss(), opt, to_device(x, xp), to_device(t, xp))
        weights[name] = {k: to_numpy(v) for k, v in model.params.items()}
    for k, want in weights["host"].items():
        np.testing.assert_allclose(weights["device"][k], want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_momentum_state_survives_a_checkpoint_round_trip_on_device(cupy):
    """Loading optimiser state writes into the flat velocity buffer the one-launch update reads."""
    rng = np.random.default_rng(7)
    x, t = (to_device(a, cupy) for a in _batch(rng))
    model = SRCNN(seed=8, xp=cupy)
    opt = MomentumSGD(model.params, lr=1e-4)
    train_step(model, MSELoss(), opt, x, t)
    saved = {k: to_numpy(v).copy() for k, v in opt.state_dict().items()}
    params = {k: to_numpy(v).copy() for k, v in model.params.items()}
    train_step(model, MSELoss(), opt, x, t)
    after_two = {k: to_numpy(v) for k, v in model.params.items()}
    fresh = SRCNN(seed=9, xp=cupy)
    fresh.set_params(params)
    opt2 = MomentumSGD(fresh.params, lr=1e-4)
    opt2.load_state_dict({k: to_device(v, cupy) for k, v in saved.items()})
    train_step(fresh, MSELoss(), opt2, x, t)
    for k, want in after_two.items():
        np.testing.assert_allclose(to_numpy(fresh.params[k]), want, rtol=1e-6, atol=1e-9)


def test_train_cli_on_device_follows_the_host_run(cupy, train_folders, tmp_path):
    """train.py --backend cupy against --backend numpy, same seed: the same falling losses."""
    train_dir, eval_dir = train_folders
    losses = {}
    for backend in ("numpy", "cupy"):
        out = tmp_path / backend
        argv = ["--train-dir", str(train_dir), "--eval-dir", str(eval_dir), "--out", str(out),
                "--cache", str(tmp_path / "patches.h5"), "--batch-size", "8", "--epochs", "3",
                "--optimizer", "sgd", "--lr", "1e-4", "1e-4", "1e-5", "--seed", "3", "--augment", "--eval-every", "1",
                "--backend", backend]
        assert train.main(argv) == 0
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        losses[backend] = [r["loss"] for r in log]
        assert all(np.isfinite(r["psnr"]) for r in log)
    np.testing.assert_allclose(losses["cupy"], losses["numpy"], rtol=1e-3)
    assert losses["cupy"][-1] < losses["cupy"][0]


def test_tiled_device_inference_equals_untiled_and_host(cupy):
    rng = np.random.default_rng(10)
    y = rng.random((70, 53))
    host = SRCNN(init="he", seed=11)
    device = host.to(cupy)
    whole = restore_y(device, y, tile=None)
    tiled = restore_y(device, y, tile=24)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5)
    np.testing.assert_allclose(whole, restore_y(host, y, tile=None), rtol=0, atol=1e-5)


def test_infer_cli_on_device_writes_the_host_image(cupy, tmp_path):
    rng = np.random.default_rng(12)
    src = tmp_path / "in.png"
    Image.fromarray(rng.integers(0, 256, (31, 27, 3), dtype=np.uint8)).save(src)
    outs = {}
    for backend in ("numpy", "cupy"):
        assert infer.main([str(src), "-o", str(tmp_path / backend), "--backend", backend]) == 0
        outs[backend] = tmp_path / backend / "in_srcnn_x3.png"
    a, b = (np.asarray(Image.open(p)).astype(int) for p in outs.values())
    assert a.shape == b.shape == (93, 81, 3)
    assert np.abs(a - b).max() <= 1
