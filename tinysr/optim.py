"""Optimisers. :class:`MomentumSGD` is the paper's (Caffe's) update rule; :class:`Adam` is
offered for a faster recipe.

Both keep their state as named arrays: ``state_dict()`` maps ``"<slot>.<param name>"`` (e.g.
``"velocity.conv1.weight"``) to an array shaped like the parameter, and ``hyperparameters()``
returns JSON-ready settings plus any scalar state (Adam's step count).
"""

from __future__ import annotations

import numpy as np

from .backend import get_array_module, is_device_array


def resolve_lr(lr, names) -> dict[str, float]:
    """Per-parameter learning rates from a float or a dict.

    A dict may name parameters exactly (``"conv3.bias"``) or by layer prefix (``"conv3"``);
    an exact name wins. Every parameter must get a rate.
    """
    if isinstance(lr, dict):
        out = {}
        for name in names:
            layer = name.split(".")[0]
            if name in lr:
                out[name] = float(lr[name])
            elif layer in lr:
                out[name] = float(lr[layer])
            else:
                raise ValueError(f"no learning rate given for parameter {name!r}")
        unknown = set(lr) - set(names) - {n.split(".")[0] for n in names}
        if unknown:
            raise ValueError(f"learning rates given for unknown parameters: {sorted(unknown)}")
        return out
    return {name: float(lr) for name in names}


class MomentumSGD:
    """SGD with momentum, per parameter ``p`` with gradient ``g``::

        v = momentum * v - lr_p * (g + weight_decay * p)
        p += v

    ``lr`` is one float or a dict of per-parameter / per-layer rates; the paper uses
    ``{"conv1": 1e-4, "conv2": 1e-4, "conv3": 1e-5}`` with momentum 0.9 and no weight decay.
    Velocities live on the parameters' device and are the optimiser's whole state.

    On the GPU, when ``params`` is a model's :class:`tinysr.model.Params` (views into one flat
    buffer), the velocities are views into one flat buffer too and :meth:`step` updates every
    parameter in one kernel launch (:func:`tinysr.cuda_kernels.momentum_update_`), after
    gathering the gradients into one buffer. The numbers are the per-parameter loop's.
    """

    def __init__(self, params: dict, lr=1e-4, momentum: float = 0.9, weight_decay: float = 0.0):
        self.lr = resolve_lr(lr, list(params))
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.velocities = {}
        flat = getattr(params, "flat", None)
        self._flat_v = None
        if flat is not None and is_device_array(flat):
            xp = get_array_module(flat)
            self._flat_v = xp.zeros_like(flat)
            offsets = [0]
            for name, p in params.items():  # views laid out like the parameters
                self.velocities[name] = self._flat_v[offsets[-1]:offsets[-1] + p.size].reshape(p.shape)
                offsets.append(offsets[-1] + p.size)
            self._offsets = xp.asarray(np.asarray(offsets, dtype=np.int64))  # uploaded once
            self._device_lrs = (None, None)  # (host rates, their device copy): uploaded when lr changes
            return
        for name, p in params.items():
            xp = get_array_module(p)
            self.velocities[name] = xp.zeros_like(p)

    def step(self, params: dict, grads: dict) -> None:
        """Update every parameter in place from its gradient."""
        for name, p in params.items():
            if grads[name].shape != p.shape:
                raise ValueError(f"gradient of {name} has shape {grads[name].shape}, parameter has {p.shape}")
        flat = getattr(params, "flat", None)
        if self._flat_v is not None and flat is not None and flat.size == self._flat_v.size:
            self._step_flat(params, grads, flat)
            return
        for name, p in params.items():
            g = grads[name]
            v = self.velocities[name]
            v *= self.momentum
            if self.weight_decay:
                v -= p.dtype.type(self.lr[name] * self.weight_decay) * p
            v -= p.dtype.type(self.lr[name]) * g
            p += v

    def _step_flat(self, params: dict, grads: dict, flat) -> None:
        """One-launch GPU update over the flat parameter and velocity buffers."""
        from .cuda_kernels import momentum_update_  # noqa: PLC0415  (GPU only)

        xp = get_array_module(flat)
        flat_g = xp.concatenate([grads[name].reshape(-1) for name in params])
        rates = tuple(self.lr[name] for name in params)
        if self._device_lrs[0] != rates:
            self._device_lrs = (rates, xp.asarray(np.asarray(rates, dtype=flat.dtype)))
        momentum_update_(flat, flat_g, self._flat_v, self._offsets, self._device_lrs[1],
                         self.momentum, self.weight_decay)

    SLOTS = ("velocity",)

    def hyperparameters(self) -> dict:
        """JSON-ready description (stored in checkpoints)."""
        return {"type": "MomentumSGD", "lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay}

    def state_dict(self) -> dict:
        """``{"velocity.<param>": array}`` (arrays on the parameters' device)."""
        return {f"velocity.{k}": v for k, v in self.velocities.items()}

    def load_state_dict(self, state: dict, scalars: dict | None = None) -> None:
        """Replace the velocities; names, shapes and dtypes must match."""
        _load_slots(self.state_dict(), state, {"velocity": self.velocities})


def _load_slots(current: dict, state: dict, slots: dict) -> None:
    """Copy ``state`` (``"<slot>.<param>"`` -> array) into ``slots[slot][param]`` after checking it."""
    if set(state) != set(current):
        raise ValueError(f"optimiser state has entries {sorted(state)}, expected {sorted(current)}")
    for key, v in state.items():
        cur = current[key]
        if v.shape != cur.shape or v.dtype != cur.dtype:
            raise ValueError(f"optimiser state {key}: {v.shape} {v.dtype}, expected {cur.shape} {cur.dtype}")
        get_array_module(cur, v)  # raises on a host/device mix: move it explicitly
        slot, name = key.split(".", 1)
        slots[slot][name][...] = v  # in place: the slot may be a view into a flat buffer


class Adam:
    """Adam (Kingma & Ba) with bias correction, per parameter::

        m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
        p -= lr_p * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    Not the paper's optimiser: offered because it reaches the paper's PSNR in far fewer
    epochs. Its step size is insensitive to the loss normalisation.
    """

    SLOTS = ("m", "v")

    def __init__(self, params: dict, lr=1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        self.lr = resolve_lr(lr, list(params))
        self.b1, self.b2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        self.t = 0
        self.m, self.v = {}, {}
        for name, p in params.items():
            xp = get_array_module(p)
            self.m[name], self.v[name] = xp.zeros_like(p), xp.zeros_like(p)

    def step(self, params: dict, grads: dict) -> None:
        """Update every parameter in place from its gradient."""
        self.t += 1
        c1, c2 = 1.0 - self.b1 ** self.t, 1.0 - self.b2 ** self.t
        for name, p in params.items():
            g = grads[name]
            if g.shape != p.shape:
                raise ValueError(f"gradient of {name} has shape {g.shape}, parameter has {p.shape}")
            xp = get_array_module(p, g)
            m, v, dt = self.m[name], self.v[name], p.dtype.type
            m *= dt(self.b1)
            m += dt(1.0 - self.b1) * g
            v *= dt(self.b2)
            v += dt(1.0 - self.b2) * (g * g)
            p -= dt(self.lr[name] / c1) * m / (xp.sqrt(v / dt(c2)) + dt(self.eps))

    def hyperparameters(self) -> dict:
        """JSON-ready settings and the step count (stored in checkpoints)."""
        return {"type": "Adam", "lr": self.lr, "betas": [self.b1, self.b2], "eps": self.eps, "t": self.t}

    def state_dict(self) -> dict:
        """``{"m.<param>": array, "v.<param>": array}``."""
        return {**{f"m.{k}": a for k, a in self.m.items()}, **{f"v.{k}": a for k, a in self.v.items()}}

    def load_state_dict(self, state: dict, scalars: dict | None = None) -> None:
        """Replace the moment estimates (and the step count from ``scalars["t"]``)."""
        _load_slots(self.state_dict(), state, {"m": self.m, "v": self.v})
        if scalars is not None:
            self.t = int(scalars.get("t", self.t))
