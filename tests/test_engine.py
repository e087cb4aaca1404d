"""The execution seam: an Engine given to a model reaches its layers, keeps training arrays only,
and the CPU and GPU primitives modules offer the layers the same names."""

import numpy as np
import pytest

from tinysr.nn.layers import MSELoss
from tinysr.nn.model import SRCNN
from tinysr.ops import primitives_cpu
from tinysr.ops import primitives_gpu
from tinysr.ops.engine import Engine
from tinysr.ops.workspace import Workspace

SHARED = ("DEVICE", "cols_shape", "im2col", "col2im", "cols_gemm", "grad_parts_rows", "weight_grad_cols",
          "input_grad_cols", "bias_relu_", "relu_backward", "tap_sum", "tap_spread", "mse_loss_grad")


@pytest.mark.parametrize("name", SHARED)
def test_both_primitives_modules_offer_the_layers_primitives(name):
    assert callable(getattr(primitives_cpu, name)) or name == "DEVICE"
    assert callable(getattr(primitives_gpu, name)) or name == "DEVICE"
    assert primitives_cpu.DEVICE is False and primitives_gpu.DEVICE is True


def test_an_engine_given_to_the_model_reaches_every_layer():
    engine = Engine(workers=2)
    model = SRCNN(n1=4, n2=3, engine=engine)
    assert all(layer.engine is engine for layer in model.layers)
    other = Engine()
    model.engine = other
    assert model.engine is other and all(layer.engine is other for layer in model.layers)
    with pytest.raises(ValueError, match="at least 1"):
        Engine(workers=0)


def test_a_split_inside_a_tile_runs_on_the_tiles_thread():
    """Tiles on worker threads hold BLAS single-threaded for the whole image: a network inside a
    tile that would split its own work (layers on 2 threads) runs on the tile's thread instead of
    waiting for the lock the tiles hold, and gives the numbers of one thread."""
    import threading

    model = SRCNN.from_arch("9-5-5", n1=6, n2=4, init="he", seed=3, engine=Engine(workers=2))
    ys = [np.random.default_rng(k).random((19, 23)).astype(np.float32) for k in range(4)]
    want = [SRCNN.from_params(model.config, model.params, engine=Engine(workers=1)).predict(y) for y in ys]
    got, threads = [None] * 4, set()

    def run(k):
        threads.add(threading.get_ident())
        got[k] = model.predict(ys[k])

    done = []
    worker = threading.Thread(target=model.engine.over_tiles, args=(run, 4, False, done.append))
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "a tile waited for the lock its own caller holds"
    assert done == [1, 2, 3, 4] and len(threads) >= 1
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_training_arrays_are_kept_and_inference_arrays_are_not():
    ws = Workspace()
    model = SRCNN(n1=4, n2=3, init="he", seed=0, engine=Engine(workspace=ws))
    x = np.random.default_rng(0).random((2, 1, 17, 17), dtype=np.float32)
    y = model.forward(x)
    MSELoss().forward(y, np.zeros_like(y))
    held = ws.nbytes
    assert held > 0
    model.predict(np.random.default_rng(1).random((40, 30), dtype=np.float32))
    model.forward(x, padding="replicate", train=False)
    assert ws.nbytes == held


def test_predict_takes_the_fast_path_through_the_engine(monkeypatch):
    from tinysr.ops import fused_predict

    calls = []
    real = fused_predict.predict_fused
    monkeypatch.setattr(fused_predict, "predict_fused", lambda m, y, engine: calls.append(engine) or real(m, y, engine))
    engine = Engine(workers=1, block=64)
    model = SRCNN(n1=4, n2=3, init="he", seed=0, engine=engine)
    y = np.random.default_rng(2).random((20, 25), dtype=np.float32)
    out = model.predict(y)
    assert calls == [engine]
    want = model.forward(y[None, None], padding="replicate", train=False)[0, 0]
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-5)
