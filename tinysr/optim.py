"""Optimisers. :class:`MomentumSGD` is the paper's (Caffe's) update rule."""

from __future__ import annotations

from .backend import get_array_module


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
    """

    def __init__(self, params: dict, lr=1e-4, momentum: float = 0.9, weight_decay: float = 0.0):
        self.lr = resolve_lr(lr, list(params))
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.velocities = {}
        for name, p in params.items():
            xp = get_array_module(p)
            self.velocities[name] = xp.zeros_like(p)

    def step(self, params: dict, grads: dict) -> None:
        """Update every parameter in place from its gradient."""
        for name, p in params.items():
            g = grads[name]
            if g.shape != p.shape:
                raise ValueError(f"gradient of {name} has shape {g.shape}, parameter has {p.shape}")
            v = self.velocities[name]
            v *= self.momentum
            if self.weight_decay:
                v -= p.dtype.type(self.lr[name] * self.weight_decay) * p
            v -= p.dtype.type(self.lr[name]) * g
            p += v

    def hyperparameters(self) -> dict:
        """JSON-ready description (stored in checkpoints)."""
        return {"type": "MomentumSGD", "lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay}

    def state_dict(self) -> dict:
        """The velocities, by parameter name (arrays on the parameters' device)."""
        return dict(self.velocities)

    def load_state_dict(self, state: dict) -> None:
        """Replace the velocities; names, shapes and dtypes must match."""
        if set(state) != set(self.velocities):
            raise ValueError(f"optimiser state has entries {sorted(state)}, expected {sorted(self.velocities)}")
        for name, v in state.items():
            cur = self.velocities[name]
            if v.shape != cur.shape or v.dtype != cur.dtype:
                raise ValueError(f"optimiser state {name}: {v.shape} {v.dtype}, expected {cur.shape} {cur.dtype}")
            xp = get_array_module(cur, v)  # raises on a host/device mix: move it explicitly
            self.velocities[name] = xp.array(v, copy=True)
