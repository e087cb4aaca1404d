"""MomentumSGD against hand computation."""

import numpy as np
import pytest

from tinysr.nn.optim import Adam, MomentumSGD, resolve_lr


def test_two_steps_by_hand():
    p = {"conv1.weight": np.array([1.0, -2.0]), "conv3.bias": np.array([0.5])}
    g1 = {"conv1.weight": np.array([0.1, 0.2]), "conv3.bias": np.array([-1.0])}
    g2 = {"conv1.weight": np.array([-0.3, 0.4]), "conv3.bias": np.array([2.0])}
    opt = MomentumSGD(p, lr={"conv1": 0.1, "conv3": 0.01}, momentum=0.9)
    opt.step(p, g1)
    # v1 = -lr g1; p1 = p0 + v1
    np.testing.assert_allclose(p["conv1.weight"], [1.0 - 0.01, -2.0 - 0.02], rtol=1e-15)
    np.testing.assert_allclose(p["conv3.bias"], [0.5 + 0.01], rtol=1e-15)
    opt.step(p, g2)
    # v2 = 0.9 v1 - lr g2
    v2w = 0.9 * np.array([-0.01, -0.02]) - 0.1 * np.array([-0.3, 0.4])
    v2b = 0.9 * np.array([0.01]) - 0.01 * np.array([2.0])
    np.testing.assert_allclose(p["conv1.weight"], np.array([0.99, -2.02]) + v2w, rtol=1e-14)
    np.testing.assert_allclose(p["conv3.bias"], np.array([0.51]) + v2b, rtol=1e-14)
    np.testing.assert_allclose(opt.state_dict()["velocity.conv1.weight"], v2w, rtol=1e-14)


def test_weight_decay_by_hand():
    p = {"w": np.array([2.0])}
    opt = MomentumSGD(p, lr=0.1, momentum=0.5, weight_decay=0.01)
    opt.step(p, {"w": np.array([1.0])})
    v1 = -0.1 * (1.0 + 0.01 * 2.0)
    assert p["w"][0] == pytest.approx(2.0 + v1, rel=1e-15)
    opt.step(p, {"w": np.array([1.0])})
    v2 = 0.5 * v1 - 0.1 * (1.0 + 0.01 * (2.0 + v1))
    assert p["w"][0] == pytest.approx(2.0 + v1 + v2, rel=1e-14)


def test_learning_rates_resolution_and_errors():
    names = ["conv1.weight", "conv1.bias", "conv3.bias"]
    lr = resolve_lr({"conv1": 1e-4, "conv3": 1e-5, "conv1.bias": 2e-4}, names)
    assert lr == {"conv1.weight": 1e-4, "conv1.bias": 2e-4, "conv3.bias": 1e-5}
    with pytest.raises(ValueError, match="conv3.bias"):
        resolve_lr({"conv1": 1e-4}, names)
    with pytest.raises(ValueError, match="unknown"):
        resolve_lr({"conv1": 1e-4, "conv3": 1e-5, "conv9": 1.0}, names)


def test_state_round_trip_and_mismatch():
    p = {"a": np.zeros(3), "b": np.zeros((2, 2))}
    opt = MomentumSGD(p, lr=0.1)
    opt.step(p, {"a": np.ones(3), "b": np.ones((2, 2))})
    other = MomentumSGD(p, lr=0.1)
    other.load_state_dict(opt.state_dict())
    for k in ("velocity.a", "velocity.b"):
        np.testing.assert_array_equal(other.state_dict()[k], opt.state_dict()[k])
    with pytest.raises(ValueError, match="shape"):
        opt.step(p, {"a": np.ones(4), "b": np.ones((2, 2))})
    with pytest.raises(ValueError, match="expected"):
        other.load_state_dict({"velocity.a": np.zeros(3)})


def test_adam_two_steps_by_hand():
    p = {"w": np.array([1.0, -1.0])}
    opt = Adam(p, lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    g1, g2 = np.array([0.5, -2.0]), np.array([-1.0, 1.0])
    m = 0.1 * g1
    v = 0.01 * g1 ** 2
    expect = np.array([1.0, -1.0]) - 0.1 * (m / 0.1) / (np.sqrt(v / 0.01) + 1e-8)
    opt.step(p, {"w": g1})
    np.testing.assert_allclose(p["w"], expect, rtol=1e-13)
    m = 0.9 * m + 0.1 * g2
    v = 0.99 * v + 0.01 * g2 ** 2
    expect = expect - 0.1 * (m / (1 - 0.81)) / (np.sqrt(v / (1 - 0.99 ** 2)) + 1e-8)
    opt.step(p, {"w": g2})
    np.testing.assert_allclose(p["w"], expect, rtol=1e-13)
    assert opt.t == 2


def test_a_recipe_gives_one_rate_for_every_layer_or_one_per_layer():
    """make_optimizer reads the layers from the parameters' names (the model's order), not a count of three."""
    from tinysr.nn.model import SRCNN
    from tinysr.nn.training import make_optimizer

    params = SRCNN(n1=4, n2=3).params
    assert set(make_optimizer("sgd", params, 1e-3, 0.9).lr.values()) == {1e-3}
    assert make_optimizer("adam", params, [2e-3], 0.9).lr["conv3.bias"] == 2e-3
    per_layer = make_optimizer("sgd", params, (1e-4, 2e-4, 1e-5), 0.9).lr
    assert per_layer == {"conv1.weight": 1e-4, "conv1.bias": 1e-4, "conv2.weight": 2e-4, "conv2.bias": 2e-4,
                         "conv3.weight": 1e-5, "conv3.bias": 1e-5}
    with pytest.raises(ValueError, match="2 learning rates for 3 layers"):
        make_optimizer("sgd", params, (1e-4, 1e-5), 0.9)
