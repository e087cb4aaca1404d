"""Export SRCNN weights as an ONNX graph: ``tinysr export (-s S | --weights FILE) OUT.onnx``.

The graph is :meth:`tinysr.nn.model.SRCNN.predict` on a batch: input ``y`` float32
``(N, 1, H, W)``, the Y channel of the bicubic-upscaled image in [0, 1], with ``N``, ``H`` and ``W``
free (named dimensions ``N``, ``H``, ``W``); output ``sr`` float32 ``(N, 1, H, W)``, the restored
Y in the same units, not clipped. Each convolution gets its own edge padding first (ONNX ``Pad``
with ``mode="edge"``, by :func:`tinysr.ops.shapes.pad_amounts` of its kernel, as ``predict``'s
``replicate`` padding does), so the output has the input's size and equals ``predict`` to float
rounding; ReLU follows the first two convolutions. The weights are float32 initializers; the
architecture, channel counts and (where known) the scale are in the model's ``metadata_props``.

Only the ``onnx`` package is needed (``pip install "tinysr[onnx]"``); it is imported on use.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from tinysr import __version__
from tinysr.atomic import atomic_write
from tinysr.cli.common import OneLineParser, positive_int
from tinysr.cli.failure import run_main
from tinysr.nn.model import SRCNN
from tinysr.ops.backend import to_numpy
from tinysr.ops.shapes import pad_amounts

PROG = "tinysr export"
MIN_OPSET = 11  # Pad takes its amounts as an input (and has mode="edge") from opset 11
DEFAULT_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "y", "sr"
DIMS = ("N", 1, "H", "W")
INSTALL_HINT = 'ONNX export needs the onnx package: pip install "tinysr[onnx]"'


def _import_onnx():
    try:
        import onnx  # noqa: PLC0415  (an optional extra)
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return onnx


def max_opset() -> int:
    """The newest default-domain opset the installed onnx package knows."""
    return int(_import_onnx().defs.onnx_opset_version())


def _metadata(model: SRCNN, meta: dict | None) -> dict[str, str]:
    props = {}
    for key, value in (meta or {}).items():
        props[str(key)] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    props.update(arch=model.arch, n1=str(model.config["n1"]), n2=str(model.config["n2"]),
                 padding="replicate", input="Y of the bicubic-upscaled image in [0, 1], float32 (N, 1, H, W)",
                 output="restored Y in [0, 1] (not clipped), float32 (N, 1, H, W)")
    return props


def build_onnx_model(model: SRCNN, *, opset: int = DEFAULT_OPSET, meta: dict | None = None):
    """The ``onnx.ModelProto`` of ``model`` (see the module docstring), checked by ``onnx.checker``.

    ``meta``: extra ``metadata_props`` (e.g. ``{"scale": 3}``); values that are not strings are
    stored as JSON. ``arch``, ``n1``, ``n2`` are always set from the model. ``ValueError`` for an
    opset outside ``MIN_OPSET`` .. :func:`max_opset`.
    """
    onnx = _import_onnx()
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    newest = max_opset()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset {opset} is not supported: choose {MIN_OPSET}..{newest} (onnx {onnx.__version__})")
    params = {k: np.ascontiguousarray(to_numpy(v), dtype=np.float32) for k, v in model.params.items()}
    inits, nodes, x = [], [], INPUT_NAME
    for i, name in enumerate(("conv1", "conv2", "conv3"), 1):
        weight = params[f"{name}.weight"]
        kh, kw = weight.shape[2:]
        top, bottom, left, right = pad_amounts(kh, kw, "replicate")
        inits += [numpy_helper.from_array(weight, f"{name}.weight"), numpy_helper.from_array(params[f"{name}.bias"],
                                                                                             f"{name}.bias")]
        if top or bottom or left or right:  # a 1x1 kernel needs none
            pads = np.array([0, 0, top, left, 0, 0, bottom, right], dtype=np.int64)  # begins, then ends (NCHW)
            inits.append(numpy_helper.from_array(pads, f"{name}.pads"))
            nodes.append(helper.make_node("Pad", [x, f"{name}.pads"], [f"{name}.padded"], name=f"{name}.pad",
                                          mode="edge"))
            x = f"{name}.padded"
        out = OUTPUT_NAME if i == 3 else f"{name}.out"
        nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [out], name=name,
                                      kernel_shape=[int(kh), int(kw)]))
        x = out
        if i < 3:
            nodes.append(helper.make_node("Relu", [x], [f"{name}.relu"], name=f"{name}.relu"))
            x = f"{name}.relu"
    graph = helper.make_graph(
        nodes, f"srcnn_{model.arch}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, list(DIMS))],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, list(DIMS))],
        initializer=inits,
        doc_string=f"SRCNN {model.arch}: Y in [0, 1] (N, 1, H, W) -> restored Y (N, 1, H, W), replicate padding")
    opsets = [helper.make_opsetid("", opset)]
    # the oldest IR version that carries this opset, so that older runtimes can load the file
    proto = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets),
                              producer_name="tinysr", producer_version=__version__)
    helper.set_model_props(proto, _metadata(model, meta))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(model: SRCNN, path, *, opset: int = DEFAULT_OPSET, meta: dict | None = None,
                overwrite: bool = False) -> Path:
    """Write ``model`` as ONNX to ``path`` (atomically; see :func:`build_onnx_model`) and return it.

    An existing ``path`` is replaced only with ``overwrite=True``; otherwise ``FileExistsError``
    and nothing is written. ``ImportError`` naming ``pip install "tinysr[onnx]"`` without onnx.
    """
    data = build_onnx_model(model, opset=opset, meta=meta).SerializeToString()
    return atomic_write(Path(path), lambda f: f.write(data), suffix=".onnx.tmp", replace=overwrite)


def _load(args) -> tuple[SRCNN, dict, str]:
    """``(model, meta, source)`` for the command line's ``-s`` or ``--weights``."""
    from tinysr.weights import bundled_path, load_weights  # noqa: PLC0415

    path = bundled_path(args.scale) if args.weights is None else Path(args.weights)
    model = load_weights(path)
    meta = {}
    if args.weights is None:
        meta["scale"] = args.scale
    elif path.suffix.lower() == ".npz":
        from tinysr.nn.serialization import read_npz  # noqa: PLC0415

        scale = read_npz(path)["meta"].get("scale")
        if scale is not None:
            meta["scale"] = scale
    meta["source"] = path.name
    return model, meta, str(path)


def build_parser(prog: str = PROG) -> OneLineParser:
    p = OneLineParser(prog=prog, description="Export SRCNN weights as an ONNX model (Y in [0, 1], any N, H, W).")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("-s", "--scale", type=int, choices=(2, 3, 4), help="export the bundled weights for this scale")
    which.add_argument("--weights", metavar="FILE", help="export a tinysr .npz (model or checkpoint) or the authors' .mat")
    p.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.onnx if it exists")
    p.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET,
                   help=f"ONNX opset of the graph (default {DEFAULT_OPSET}; at least {MIN_OPSET})")
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """The command line; 0 on success (prints the path written), 2 with one line on stderr otherwise."""
    args = build_parser(prog).parse_args(argv)
    out = Path(args.out)

    def work() -> int:
        if out.suffix.lower() != ".onnx":
            raise ValueError(f"{out}: the output must end in .onnx")
        if out.is_dir():
            raise ValueError(f"{out} is a folder")
        if (out.exists() or out.is_symlink()) and not args.overwrite:
            raise ValueError(f"{out} exists (use --overwrite to replace it)")
        if not out.parent.is_dir():
            raise ValueError(f"{out.parent}: no such folder")
        _import_onnx()  # before loading weights: a missing extra is the first thing to say
        model, meta, _ = _load(args)
        try:
            export_onnx(model, out, opset=args.opset, meta=meta, overwrite=args.overwrite)
        except FileExistsError:  # created by someone else since the check above
            raise ValueError(f"{out} exists (use --overwrite to replace it)") from None
        print(out)
        return 0

    return run_main(prog, work)


if __name__ == "__main__":
    sys.exit(main())
