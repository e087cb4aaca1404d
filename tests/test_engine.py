"""The execution seam: an Engine given to a model reaches its layers, keeps training arrays only,
and the CPU and GPU primitives modules offer the layers the same names."""

import inspect

import numpy as np
import pytest

from tinysr.nn.layers import MSELoss
from tinysr.nn.model import SRCNN
from tinysr.ops import primitives_cpu
from tinysr.ops import primitives_gpu
from tinysr.ops.primitives import CONV_ALGORITHMS, DirectConv, Primitives
from tinysr.ops.engine import Engine
from tinysr.ops.workspace import Workspace

@pytest.mark.parametrize("module", [primitives_cpu, primitives_gpu], ids=["cpu", "gpu"])
def test_both_primitives_modules_satisfy_the_device_contract(module):
    """Every member of ops.primitives.Primitives is in the module, a function with the protocol's
    parameter names where it is a method; a module offering the direct conv has its primitives too."""
    assert isinstance(module, Primitives)
    members = [n for n in vars(Primitives) if not n.startswith("_")] + list(Primitives.__annotations__)
    for name in members:
        declared = getattr(Primitives, name, None)
        if callable(declared):
            _same_parameters(getattr(module, name), declared)
    assert isinstance(module.kind, str) and isinstance(module.host_threads, bool)
    offered = {a for shape in [(64, 1, 9, 9), (32, 64, 1, 1), (1, 32, 5, 5)] for train in (False, True)
               for a in module.conv_algorithms(shape, train, False)}
    assert offered <= set(CONV_ALGORITHMS)
    assert ("direct" in offered) == isinstance(module, DirectConv)
    for name in [n for n in vars(DirectConv) if not n.startswith("_")] if "direct" in offered else []:
        _same_parameters(getattr(module, name), getattr(DirectConv, name))


def _same_parameters(function, declared):
    # The protocol's parameters (without self), in order; any more only with defaults (a device's own options).
    want = list(inspect.signature(declared).parameters)[1:]
    got = inspect.signature(function).parameters
    assert list(got)[:len(want)] == want, declared.__name__
    assert all(p.default is not p.empty for p in list(got.values())[len(want):]), declared.__name__


def test_the_registry_maps_an_array_to_its_devices_primitives():
    from tinysr.ops import backend

    assert backend.primitives(np.zeros(2)) is primitives_cpu
    assert backend.primitives(1.0, None) is primitives_cpu  # host data of any type counts as NumPy's
    assert backend.DEVICES["numpy"] == primitives_cpu.__name__ and backend.DEVICES["cupy"] == primitives_gpu.__name__
    assert primitives_cpu.kind != primitives_gpu.kind
    assert primitives_cpu.free_bytes(np.zeros(2)) is None and primitives_cpu.index_limit() is None


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
    worker = threading.Thread(target=model.engine.over_tiles, args=(run, 4, primitives_cpu, done.append))
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


def _imports(package: str) -> dict[str, set[str]]:
    """``{module file: the modules it imports}`` for every module of ``tinysr.<package>`` (``from a import b``
    counts as ``a`` and ``a.b``)."""
    import ast
    from pathlib import Path

    import tinysr

    out = {}
    for path in sorted((Path(tinysr.__file__).parent / package).glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        out[f"{package}/{path.name}"] = names
    return out


@pytest.mark.parametrize("package", ["nn", "image", "distributed"])
def test_device_questions_go_through_the_primitives(package):
    """nn/, image/ and distributed/ never import the CUDA kernel wrappers, and nn/ and image/ never
    import CuPy: what they need to know of a device (algorithms, free memory, index limit) the
    primitives of its arrays answer."""
    for module, names in _imports(package).items():
        assert "tinysr.ops.cuda_kernels" not in names, module
        if package != "distributed":  # NCCL in distributed/ may
            assert not any(n == "cupy" or n.startswith("cupy.") for n in names), module
