"""The network's shape is stated once (nn.model.layer_shapes); names, shapes, layers and the
per-layer settings follow from it."""

import numpy as np

from tinysr.nn.model import LAYER_NAMES, PARAM_NAMES, SRCNN, layer_shapes, param_shapes


def test_names_shapes_and_layers_follow_the_one_table():
    model = SRCNN(f1=7, f2=3, f3=5, n1=6, n2=4)
    table = layer_shapes(model.config)
    assert tuple(table) == LAYER_NAMES == tuple(name for name, _ in model.named_layers())
    assert PARAM_NAMES == tuple(param_shapes(model.config)) == tuple(model.params)
    for (name, layer), shape in zip(model.named_layers(), table.values()):
        assert layer is getattr(model, name) and layer.weight.shape == shape and layer.bias.shape == shape[:1]
        assert model.params[f"{name}.weight"] is layer.weight
    assert [layer.relu for layer in model.layers] == [True] * (len(table) - 1) + [False]
    assert [layer.need_input_grad for layer in model.layers] == [False] + [True] * (len(table) - 1)
    assert model.shrink == sum((shape[2] - 1) // 2 for shape in table.values()) == 3 + 1 + 2


def test_forward_and_backward_run_every_layer_in_order():
    model = SRCNN(n1=4, n2=3, init="he", seed=1, dtype=np.float64)
    x = np.random.default_rng(0).random((2, 1, 17, 17))
    h = x
    for layer in model.layers:
        h = layer.forward(h, "valid", False)
    y = model.forward(x)
    np.testing.assert_array_equal(y, h)
    model.backward(np.ones_like(y))
    assert all(g is not None and np.any(g) for g in model.grads.values())
