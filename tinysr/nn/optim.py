"""Optimisers. :class:`MomentumSGD` is the paper's (Caffe's) update rule; :class:`Adam` is
offered for a faster recipe.

Both keep their state as named arrays: ``state_dict()`` maps ``"<slot>.<param name>"`` (e.g.
``"velocity.conv1.weight"``) to an array shaped like the parameter, and ``hyperparameters()``
returns JSON-ready settings plus any scalar state (Adam's step count).
"""

from __future__ import annotations

import numpy as np

from tinysr.ops.backend import get_array_module


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

    Where ``params`` and the gradients are a model's :class:`tinysr.nn.model.Params` (views into one
    flat buffer each), the velocities are views into one flat buffer too and :meth:`step` is a few
    operations on the whole buffers, with the rates spread per element (the per-parameter numbers).
    """

    def __init__(self, params: dict, lr=1e-4, momentum: float = 0.9, weight_decay: float = 0.0):
        self.lr = resolve_lr(lr, list(params))
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        flat = getattr(params, "flat", None)
        self._flat_v = None if flat is None else get_array_module(flat).zeros_like(flat)
        self._rates = (None, None, None)  # (per-parameter rates, lr and lr * weight_decay per element)
        self.velocities, offset = {}, 0
        for name, p in params.items():  # views laid out like the parameters where there is a flat buffer
            if self._flat_v is None:
                self.velocities[name] = get_array_module(p).zeros_like(p)
            else:
                self.velocities[name] = self._flat_v[offset:offset + p.size].reshape(p.shape)
            offset += p.size

    def step(self, params: dict, grads: dict) -> None:
        """Update every parameter in place from its gradient."""
        for name, p in params.items():
            if grads[name].shape != p.shape:
                raise ValueError(f"gradient of {name} has shape {grads[name].shape}, parameter has {p.shape}")
        flat_p, flat_g, v = getattr(params, "flat", None), getattr(grads, "flat", None), self._flat_v
        if v is not None and flat_p is not None and flat_g is not None and flat_p.size == v.size:
            lr, lr_wd = self._flat_rates(params, flat_p)
            v *= self.momentum
            if self.weight_decay:
                v -= lr_wd * flat_p
            v -= lr * flat_g
            flat_p += v
            return
        for name, p in params.items():
            g = grads[name]
            v = self.velocities[name]
            v *= self.momentum
            if self.weight_decay:
                v -= p.dtype.type(self.lr[name] * self.weight_decay) * p
            v -= p.dtype.type(self.lr[name]) * g
            p += v

    def _flat_rates(self, params: dict, flat):
        """``lr_p`` and ``lr_p * weight_decay`` per element of the flat buffer, in its dtype (made
        again, and moved to the device once, when the rates change)."""
        rates = tuple(self.lr[name] for name in params)
        if self._rates[0] != rates:
            sizes = [p.size for p in params.values()]
            lr = np.repeat(np.asarray(rates, dtype=flat.dtype), sizes)
            lr_wd = np.repeat(np.asarray([r * self.weight_decay for r in rates], dtype=flat.dtype), sizes)
            xp = get_array_module(flat)
            self._rates = (rates, xp.asarray(lr), xp.asarray(lr_wd))
        return self._rates[1], self._rates[2]

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
