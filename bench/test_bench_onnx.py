"""ONNX Runtime and OpenVINO as CPU yardsticks for whole-model 9-1-5 inference.

Same groups (``srcnn-infer-<W>x<H>``), input and weights as ``test_bench_model.py``'s
``test_srcnn_inference``, so ``report.py`` lines them up with ``tinysr-numpy`` and ``torch-cpu``:
one Y image ``(H, W)`` float32 in [0, 1] on the host in, a host float64 ``(H, W)`` out. The
network is the graph ``tinysr.cli.export_onnx`` writes (per-layer edge padding, same output size).

- ``onnxruntime-cpu``: an ``InferenceSession`` on the CPU provider, the exported graph as it is
  (dynamic ``N, H, W``), ``intra_op_num_threads`` = ``TINYSR_BENCH_THREADS``, all graph
  optimisations (the default).
- ``openvino-cpu``: the graph reshaped to the image's static shape and compiled for ``CPU`` with
  ``INFERENCE_NUM_THREADS`` = ``TINYSR_BENCH_THREADS``, ``PERFORMANCE_HINT=LATENCY`` and
  ``INFERENCE_PRECISION_HINT=f32`` (OpenVINO's CPU default is bf16 where the CPU has it; tinysr
  is float32).

Creating the session / compiling the graph happens before the timed calls and is not in
``compile_s`` either (by then one call has run: that entry's warm-up is a warm call).

Each entry skips, with the reason, when onnx or its runtime is not importable. Before timing,
one call is checked against ``SRCNN.predict`` (max abs 1e-4), so a yardstick that computes
something else fails instead of being reported.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from benchutil import IMAGE_SIZES, QUICK_IMAGE_SIZES, srcnn_flop

from tinysr.nn.model import SRCNN

# as conftest.py reads it: the CPU threads every backend gets
THREADS = int(os.environ.get("TINYSR_BENCH_THREADS", "2"))
ONNX_IMPLS = ["onnxruntime-cpu", "openvino-cpu"]
_INSTALL = {"onnxruntime": "pip install onnxruntime", "openvino": "pip install openvino"}


def _module(name: str):
    """The module ``name``, or a skip saying it is missing and how to install it."""
    try:
        return __import__(name)
    except ImportError as exc:
        pytest.skip(f"{name} is not importable ({exc}); {_INSTALL.get(name, 'pip install ' + name)} "
                    "for this yardstick")


def _export(model: SRCNN, folder) -> str:
    _module("onnx")
    from tinysr.cli.export_onnx import export_onnx  # noqa: PLC0415

    return str(export_onnx(model, folder / f"srcnn_{model.arch}.onnx", overwrite=True))


def ort_runner(path: str, shape):
    """``(fn, version)``: ``fn(y4)`` runs the graph in ONNX Runtime on ``THREADS`` CPU threads."""
    ort = _module("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return (lambda y4: sess.run(["sr"], {"y": y4})[0]), f"onnxruntime {ort.__version__}"


def openvino_runner(path: str, shape):
    """``(fn, version)``: ``fn(y4)`` runs the graph compiled by OpenVINO for ``shape``, float32."""
    ov = _module("openvino")
    core = ov.Core()
    net = core.read_model(path)
    net.reshape(list(shape))
    compiled = core.compile_model(net, "CPU", {"INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY",
                                               "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    def fn(y4):
        request.infer({0: y4})
        return request.get_output_tensor(0).data
    return fn, f"openvino {ov.__version__}"


RUNNERS = {"onnxruntime-cpu": ort_runner, "openvino-cpu": openvino_runner}


@pytest.mark.parametrize("size,impl", [
    pytest.param(size, impl, id=f"{size}-{impl}", marks=pytest.mark.benchmark(group=f"srcnn-infer-{size}"))
    for size, _ in IMAGE_SIZES for impl in ONNX_IMPLS])
def test_srcnn_inference_onnx(measure, quick, tmp_path, size, impl):
    h, w = QUICK_IMAGE_SIZES[size] if quick else dict(IMAGE_SIZES)[size]
    y = np.random.default_rng(0).random((h, w), dtype=np.float32)
    model = SRCNN(init="he", seed=0, dtype=np.float32)
    run, version = RUNNERS[impl](_export(model, tmp_path), (1, 1, h, w))
    y4 = y[None, None]

    def fn():
        return run(y4)[0, 0].astype(np.float64)

    err = float(np.abs(fn() - model.predict(y)).max())
    assert err <= 1e-4, f"{impl} differs from SRCNN.predict by {err}"
    measure(fn, flop=srcnn_flop(1, h, w, "replicate"), image_hw=[h, w], tile=None, runtime=version,
            max_abs_vs_predict=err)
