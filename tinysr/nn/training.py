"""The training math and loop: one SGD/Adam step, one epoch of steps, the optimiser a recipe
names, the learning-rate schedule and the eight-fold augmentation.

Shapes: inputs ``x`` ``(N, 1, 33, 33)``, labels ``t`` ``(N, 1, L, L)`` with ``L = 33 - 2 * shrink``
(21 for 9-1-5, 17 for 9-5-5), float pixels in [0, 1]. The loss is :class:`~tinysr.nn.layers.MSELoss`,
Caffe's Euclidean loss ``sum((pred - t)^2) / (2 * N)``. Arrays stay on the model's device
(``model.xp``); the only host synchronisation is the epoch's mean loss.

The command (:mod:`tinysr.cli.train`) settles the recipe, builds the model, optimiser and data,
and calls :func:`train_epoch` once per epoch; signals, progress bars and messages stay there,
reaching into the loop only through the ``check_stop`` and ``on_step`` callbacks.
"""

from __future__ import annotations

import math

import numpy as np

from tinysr.nn.layers import MSELoss
from tinysr.nn.model import SRCNN
from tinysr.nn.optim import Adam, MomentumSGD
from tinysr.nn.parallel import SOLO, shard_indices
from tinysr.ops.backend import get_array_module, to_device


def make_optimizer(name: str, params: dict, lr, momentum: float):
    """``"adam"``: :class:`~tinysr.nn.optim.Adam`; else the paper's
    :class:`~tinysr.nn.optim.MomentumSGD` with ``momentum``. ``lr``: one learning rate for every
    layer, or one per layer in the model's order (conv1, conv2, conv3: the layers named in ``params``)."""
    layers = tuple(dict.fromkeys(name.partition(".")[0] for name in params))
    rates = [lr] if isinstance(lr, (int, float)) else list(lr)
    if len(rates) not in (1, len(layers)):
        raise ValueError(f"{len(rates)} learning rates for {len(layers)} layers: give one, or one per layer")
    lrs = dict(zip(layers, rates * len(layers) if len(rates) == 1 else rates))
    if name == "adam":
        return Adam(params, lr=lrs)
    return MomentumSGD(params, lr=lrs, momentum=momentum)


def schedule_factor(kind: str, epoch: int, epochs: int) -> float:
    """Learning-rate multiplier for 0-based ``epoch`` of ``epochs``: 1 for ``"constant"``; for
    ``"cosine"`` half a cosine from 1 down towards 0.01."""
    if kind == "constant":
        return 1.0
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))


def dihedral(a, k: int):
    """``a`` ``(N, C, H, W)`` (host or device) rotated by ``k % 4`` quarter turns, then transposed
    if ``k >= 4``: the 8 symmetries of the square (``k`` in 0..7), as a contiguous copy on
    ``a``'s device. Bicubic degradation commutes with them, so an input patch and its label
    stay a valid pair."""
    xp = get_array_module(a)
    a = xp.rot90(a, k % 4, axes=(2, 3))
    return xp.ascontiguousarray(a.transpose(0, 1, 3, 2) if k >= 4 else a)


def train_step(model: SRCNN, loss_fn: MSELoss, opt, x, t, dist=SOLO):
    """One update from this rank's batch ``x`` ``(n, 1, 33, 33)``, labels ``t`` ``(n, 1, L, L)``:
    forward, backward, gradients averaged over the ranks, optimiser step. Returns the 0-d loss.
    Threads and kept arrays are the model's :attr:`~tinysr.nn.model.SRCNN.engine`'s."""
    loss = loss_fn.forward(model.forward(x), t)
    model.backward(loss_fn.backward())
    dist.average(model.grads)
    opt.step(model.params, model.grads)
    return loss


def train_epoch(model: SRCNN, loss_fn: MSELoss, opt, inputs, labels, batch_size: int, rng: np.random.Generator,
                *, augment: bool = False, dist=SOLO, check_stop=None, on_step=None) -> float:
    """One pass over the patches ``inputs`` ``(N, 1, 33, 33)`` and ``labels`` ``(N, 1, L, L)``
    (on the model's device): ``N // batch_size`` steps of :func:`train_step` over a permutation
    drawn from ``rng``; the last ``N % batch_size`` patches of it are left out.

    ``batch_size`` is the global batch; this rank trains on its ``batch_size // dist.size`` slice
    of each (:func:`~tinysr.distributed.mpi.shard_indices`). ``augment``: each batch in one of the
    8 :func:`dihedral` symmetries, drawn from ``rng`` after the permutation. ``check_stop()`` is
    called before every step (it may raise to end the epoch); ``on_step(done, loss_sum)`` after
    it, with the steps done and the 0-d running sum of their losses, on the device (``float()``
    of it synchronises a GPU).

    Returns the epoch's mean loss per step, averaged over the ranks: a Python float.
    """
    xp = model.xp
    n = inputs.shape[0]
    steps = n // batch_size
    perm = rng.permutation(n)
    # This rank's patch order for the whole epoch, uploaded once; each step slices it on the device.
    order = to_device(np.concatenate([shard_indices(perm, s, batch_size, dist.rank, dist.size)
                                      for s in range(steps)]), xp)
    per = batch_size // dist.size
    loss_sum = xp.zeros((), dtype=model.dtype)
    for s in range(steps):
        if check_stop is not None:
            check_stop()
        idx = order[s * per:(s + 1) * per]
        x, t = inputs[idx], labels[idx]
        if augment:
            k = int(rng.integers(8))
            x, t = dihedral(x, k), dihedral(t, k)
        loss_sum += train_step(model, loss_fn, opt, x, t, dist)
        if on_step is not None:
            on_step(s + 1, loss_sum)
    return dist.mean(float(loss_sum) / steps)  # the one host synchronisation per epoch


__all__ = ["dihedral", "make_optimizer", "schedule_factor", "train_epoch", "train_step"]
