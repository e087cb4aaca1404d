"""Central finite differences and the error measure used by the gradient checks (float64)."""

from __future__ import annotations

import numpy as np


def numerical_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d f / d x by central differences, perturbing ``x`` in place one element at a time.

    ``f`` maps nothing to a Python float and must read ``x`` (the same array object). ``x`` may
    be a device array (the gradient is then a host array).
    """
    g = np.zeros(x.shape, dtype=np.float64)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = float(flat[i])  # a Python copy: CuPy's flat[i] is a 0-d view, NumPy's a scalar
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g


def max_relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """``max |a - n| / max(max |a|, max |n|)``: the worst error relative to the gradient's scale."""
    scale = max(np.abs(analytic).max(), np.abs(numeric).max())
    assert scale > 0, "gradient is identically zero: the check would prove nothing"
    return float(np.abs(analytic - numeric).max() / scale)


def check_device_model_gradients(xp, arch: dict, x_shape: tuple, padding: str, tol: float, seed: int = 2) -> None:
    """An ``SRCNN(**arch)`` in float64 on ``xp`` with He weights and random (non-zero) biases, on a
    random batch ``x_shape`` with a random target: every parameter's backward gradient against
    central differences of the forward pass, to ``tol`` (max relative error)."""
    from tinysr.nn.layers import MSELoss  # noqa: PLC0415
    from tinysr.nn.model import SRCNN  # noqa: PLC0415
    from tinysr.ops.backend import to_device, to_numpy  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    host = SRCNN(**arch, dtype=np.float64, init="he", seed=3)
    model = SRCNN(**arch, dtype=np.float64, xp=xp)
    model.set_params({k: v + (rng.standard_normal(v.shape) * 0.1 if k.endswith("bias") else 0)
                      for k, v in host.params.items()})
    x = to_device(rng.random(x_shape), xp)
    y = model.forward(x, padding)
    target = to_device(rng.random(y.shape), xp)
    loss = MSELoss()
    loss.forward(y, target)
    model.backward(loss.backward())
    grads = {k: to_numpy(v) for k, v in model.grads.items()}

    def f():
        return float(MSELoss().forward(model.forward(x, padding, train=False), target))

    for name, p in model.params.items():
        err = max_relative_error(grads[name], numerical_grad(f, p))
        assert err < tol, f"{name}: max relative error {err:.2e}"
