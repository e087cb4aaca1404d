"""A Workspace keeps a training step's arrays for the next step: the same numbers, no new arrays."""

import numpy as np

from tinysr.nn.training import train_step
from tinysr.nn.layers import Conv2d, MSELoss
from tinysr.nn.model import SRCNN
from tinysr.nn.optim import MomentumSGD
from tinysr.ops.backend import to_device, to_numpy
from tinysr.ops.engine import Engine
from tinysr.ops.workspace import Workspace


def _run(xp, batches, workspace, steps=3):
    model = SRCNN(init="he", seed=2, xp=xp, engine=Engine(workspace=workspace))
    opt, loss_fn = MomentumSGD(model.params, lr=1e-3), MSELoss()
    losses, held = [], []
    for x, t in batches[:steps]:
        losses.append(float(train_step(model, loss_fn, opt, to_device(x, xp), to_device(t, xp))))
        if workspace is not None:
            held.append((workspace.nbytes, sorted(id(a) for a in workspace._arrays.values())))
    return losses, {k: to_numpy(v).copy() for k, v in model.params.items()}, held


def _batches(n_list, seed=3):
    rng = np.random.default_rng(seed)
    out = []
    for n in n_list:
        x = rng.random((n, 1, 33, 33), dtype=np.float32)
        out.append((x, np.ascontiguousarray(x[:, :, 6:27, 6:27] ** 2)))
    return out


def _same_run(a, b):
    assert a[0] == b[0]
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k], err_msg=k)


def test_steps_with_a_workspace_equal_steps_without_and_reuse_its_arrays():
    batches = _batches([5, 5, 5])
    ws = Workspace()
    with_ws, without = _run(np, batches, ws), _run(np, batches, None)
    _same_run(with_ws, without)
    held = with_ws[2]
    assert held[0][0] > 5 * 64 * 25 * 25 * 4, "layer 1's output should be among the kept arrays"
    assert held[0] == held[1] == held[2], "later steps should take the same arrays, not new ones"


def test_a_new_batch_size_gets_new_arrays_and_right_numbers():
    batches = _batches([4, 6, 4])
    ws = Workspace()
    with_ws, without = _run(np, batches, ws), _run(np, batches, None)
    _same_run(with_ws, without)
    assert with_ws[2][1][0] > with_ws[2][0][0]  # batch 6 needs more than batch 4


def test_the_layer_output_lives_in_the_workspace_until_the_next_call():
    """The documented contract: a second forward with the same workspace overwrites the first's output."""
    rng = np.random.default_rng(4)
    w, b = rng.standard_normal((3, 1, 3, 3)), rng.standard_normal(3)
    conv = Conv2d(w, b, engine=Engine(workspace=Workspace()))
    x1, x2 = rng.standard_normal((2, 1, 6, 6)), rng.standard_normal((2, 1, 6, 6))
    y1 = conv.forward(x1)
    first = y1.copy()
    y2 = conv.forward(x2)
    assert y2 is y1 and not np.array_equal(y1, first)
    plain = Conv2d(w, b)
    assert plain.forward(x1) is not plain.forward(x1)  # without a workspace: a new array
    np.testing.assert_array_equal(plain.forward(x1), first)


def test_steps_on_the_device_with_a_workspace_equal_steps_without(cupy):
    batches = _batches([4, 4, 4])
    ws = Workspace()
    with_ws = _run(cupy, batches, ws)
    _same_run(with_ws, _run(cupy, batches, None))
    assert with_ws[2][0] == with_ws[2][2]
