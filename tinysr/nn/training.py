"""The training math and loop: one SGD/Adam step, one epoch of steps, the optimiser a recipe
names, the learning-rate schedule and the eight-fold augmentation.

Shapes: inputs ``x`` ``(N, 1, 33, 33)``, labels ``t`` ``(N, 1, L, L)`` with ``L = 33 - 2 * shrink``
(21 for 9-1-5, 17 for 9-5-5), float pixels in [0, 1]. The loss is :class:`~tinysr.nn.layers.MSELoss`,
Caffe's Euclidean loss ``sum((pred - t)^2) / (2 * N)``. Arrays stay on the model's device
(``model.xp``); the only host synchronisation is the epoch's mean loss.

:class:`tinysr.nn.run.TrainingRun` builds the model, optimiser and data from the settled recipe
and calls :func:`fit`: the epochs with their learning-rate schedule, evaluation when due and a
callback after each epoch (checkpoint, log, message); signals, progress bars and messages stay
in the command (:mod:`tinysr.cli.train`), reaching into the loop only through callbacks.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext

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


# Overflow to inf/NaN in a diverging run: the non-finite loss after the epoch reports it (LossNotFinite).
_NUMERIC_WARNINGS = r"(overflow|invalid value|divide by zero) encountered"


class LossNotFinite(ArithmeticError):
    """The loss of epoch ``epoch`` (1-based) became ``loss`` (inf or NaN): training cannot go on."""

    def __init__(self, epoch: int, loss: float):
        super().__init__(f"loss became {loss} in epoch {epoch}")
        self.epoch, self.loss = epoch, loss


def fit(model: SRCNN, loss_fn: MSELoss, opt, inputs, labels, *, batch_size: int, epochs: int,
        rng: np.random.Generator, schedule: str = "constant", base_lr: dict | None = None, start_epoch: int = 0,
        elapsed: float = 0.0, augment: bool = False, dist=SOLO, check_stop=None,
        steps_bar: Callable | None = None, evaluate: Callable | None = None, eval_every: int = 0,
        on_epoch: Callable | None = None) -> dict:
    """Train epochs ``start_epoch + 1`` .. ``epochs`` (:func:`train_epoch` each) and return the
    last epoch's record (``{}`` when none was left).

    Each epoch's learning rates are ``base_lr`` (default: ``opt.lr`` now) times
    :func:`schedule_factor`. Its record: ``epoch``, ``loss`` (mean per step), ``mse`` (per pixel,
    [0, 1] pixels), ``seconds``, ``elapsed`` (counting on from ``elapsed``), ``patches_per_s``,
    ``lr_factor``. A loss that is not finite raises :class:`LossNotFinite` (on every rank). Then,
    on rank 0 only: every ``eval_every`` epochs and after the last (``eval_every`` 0: never),
    ``evaluate(model)`` returns entries for the record (e.g. ``{"psnr", "ssim"}``); then
    ``on_epoch(record, seconds, elapsed)`` (unrounded seconds of this epoch and of the run): a
    checkpoint, the log, a line. ``steps_bar(epoch, steps)``: a context manager giving
    :func:`train_epoch`'s ``on_step`` (or ``None``), closed also when the epoch is interrupted;
    ``check_stop`` as :func:`train_epoch`'s.
    """
    base_lr = dict(opt.lr) if base_lr is None else base_lr
    steps = inputs.shape[0] // batch_size
    pixels = labels.shape[-1] * labels.shape[-2]
    record: dict = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NUMERIC_WARNINGS, category=RuntimeWarning)
        for epoch in range(start_epoch, epochs):
            factor = schedule_factor(schedule, epoch, epochs)
            opt.lr = {k: v * factor for k, v in base_lr.items()}
            t0 = time.perf_counter()
            with (steps_bar(epoch, steps) if steps_bar is not None else nullcontext()) as on_step:
                loss = train_epoch(model, loss_fn, opt, inputs, labels, batch_size, rng, augment=augment,
                                   dist=dist, check_stop=check_stop, on_step=on_step)
            seconds = time.perf_counter() - t0
            elapsed += seconds
            if not math.isfinite(loss):
                raise LossNotFinite(epoch + 1, loss)
            record = {"epoch": epoch + 1, "loss": loss, "mse": MSELoss.per_pixel_mse(loss, pixels),
                      "seconds": round(seconds, 3), "elapsed": round(elapsed, 3),
                      "patches_per_s": round(steps * batch_size / seconds, 1), "lr_factor": factor}
            if not dist.is_root:
                continue  # rank 0 alone evaluates, writes files and prints
            if evaluate is not None and eval_every and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
                record.update(evaluate(model))
            if on_epoch is not None:
                on_epoch(record, seconds, elapsed)
    return record


__all__ = ["LossNotFinite", "dihedral", "fit", "make_optimizer", "schedule_factor", "train_epoch", "train_step"]
