"""Export SRCNN weights as an ONNX graph: ``tinysr export (-s S | --weights FILE) OUT.onnx``.

The graph is :meth:`tinysr.nn.model.SRCNN.predict` on a batch: input ``y`` float32
``(N, 1, H, W)``, the Y channel of the bicubic-upscaled image in [0, 1], with ``N``, ``H`` and ``W``
free (named dimensions ``N``, ``H``, ``W``); output ``sr`` float32 ``(N, 1, H, W)``, the restored
Y in the same units, not clipped. Each convolution gets its own edge padding first (ONNX ``Pad``
with ``mode="edge"``, by :func:`tinysr.ops.shapes.pad_amounts` of its kernel, as ``predict``'s
``replicate`` padding does), so the output has the input's size and equals ``predict`` to float
rounding; ReLU follows the first two convolutions. The weights are float32 initializers; the
architecture, channel counts and (where known) the scale are in the model's ``metadata_props``.

``--rgb`` (:func:`build_rgb_onnx_model`) exports the whole enlargement instead: RGB ``(N, 3, H, W)``
(float32 on [0, 1], or uint8 with ``--uint8``) in, RGB ``scale`` times larger out, with tinysr's
YCbCr, Matlab bicubic, the network on Y and the way back to RGB in the graph.

Only the ``onnx`` package is needed to export (``pip install "tinysr[onnx]"``, which also installs
onnxruntime to run the result); it is imported on use.
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


def _network(onnx_helper, numpy_helper, params: dict, x: str, out: str) -> tuple[list, list]:
    """``(nodes, initializers)`` of the SRCNN on the ``(N, 1, H, W)`` tensor ``x`` into ``out``
    (see the module docstring: per-layer edge padding, ReLU after the first two convolutions)."""
    inits, nodes = [], []
    for i, name in enumerate(("conv1", "conv2", "conv3"), 1):
        weight = params[f"{name}.weight"]
        kh, kw = weight.shape[2:]
        top, bottom, left, right = pad_amounts(kh, kw, "replicate")
        inits += [numpy_helper.from_array(weight, f"{name}.weight"), numpy_helper.from_array(params[f"{name}.bias"],
                                                                                             f"{name}.bias")]
        if top or bottom or left or right:  # a 1x1 kernel needs none
            pads = np.array([0, 0, top, left, 0, 0, bottom, right], dtype=np.int64)  # begins, then ends (NCHW)
            inits.append(numpy_helper.from_array(pads, f"{name}.pads"))
            nodes.append(onnx_helper.make_node("Pad", [x, f"{name}.pads"], [f"{name}.padded"], name=f"{name}.pad",
                                               mode="edge"))
            x = f"{name}.padded"
        conv_out = out if i == 3 else f"{name}.out"
        nodes.append(onnx_helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [conv_out], name=name,
                                           kernel_shape=[int(kh), int(kw)]))
        x = conv_out
        if i < 3:
            nodes.append(onnx_helper.make_node("Relu", [x], [f"{name}.relu"], name=f"{name}.relu"))
            x = f"{name}.relu"
    return nodes, inits


def _params(model: SRCNN) -> dict:
    return {k: np.ascontiguousarray(to_numpy(v), dtype=np.float32) for k, v in model.params.items()}


def _finish(onnx, helper, graph, opset: int, props: dict):
    """The checked ``ModelProto`` of ``graph`` at ``opset`` with ``props`` as its metadata."""
    opsets = [helper.make_opsetid("", opset)]
    # the oldest IR version that carries this opset, so that older runtimes can load the file
    proto = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets),
                              producer_name="tinysr", producer_version=__version__)
    helper.set_model_props(proto, props)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _check_opset(onnx, opset: int) -> None:
    newest = max_opset()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset {opset} is not supported: choose {MIN_OPSET}..{newest} (onnx {onnx.__version__})")


def build_onnx_model(model: SRCNN, *, opset: int = DEFAULT_OPSET, meta: dict | None = None):
    """The ``onnx.ModelProto`` of ``model`` (see the module docstring), checked by ``onnx.checker``.

    ``meta``: extra ``metadata_props`` (e.g. ``{"scale": 3}``); values that are not strings are
    stored as JSON. ``arch``, ``n1``, ``n2`` are always set from the model. ``ValueError`` for an
    opset outside ``MIN_OPSET`` .. :func:`max_opset`.
    """
    onnx = _import_onnx()
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    _check_opset(onnx, opset)
    nodes, inits = _network(helper, numpy_helper, _params(model), INPUT_NAME, OUTPUT_NAME)
    graph = helper.make_graph(
        nodes, f"srcnn_{model.arch}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, list(DIMS))],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, list(DIMS))],
        initializer=inits,
        doc_string=f"SRCNN {model.arch}: Y in [0, 1] (N, 1, H, W) -> restored Y (N, 1, H, W), replicate padding")
    return _finish(onnx, helper, graph, opset, _metadata(model, meta))


def _mirror_indices(helper, numpy_helper, x: str, axis: int, margin: int) -> tuple[list, list, str]:
    """Nodes computing the int64 indices that pad axis ``axis`` of ``x`` by ``margin`` on each side as
    Matlab's ``imresize`` extends an image (mirrored with the edge repeated: ``x1 x0 | x0 .. x(n-1) |
    x(n-1) x(n-2)``; every index clamped to ``0..n-1``, so a 1-pixel axis repeats its pixel). The
    clamp goes through float32 (exact for these integers) because opset 11's Min and Max take no int64."""
    from onnx import TensorProto  # noqa: PLC0415

    p = f"mirror{axis}"
    c = {f"{p}.axis": np.array(axis, dtype=np.int64), f"{p}.zero": np.array(0, dtype=np.int64),
         f"{p}.one": np.array(1, dtype=np.int64),
         f"{p}.left": np.arange(margin - 1, -1, -1, dtype=np.int64),  # margin-1 .. 0
         f"{p}.after": np.arange(1, margin + 1, dtype=np.int64)}  # n-1 .. n-margin below
    inits = [numpy_helper.from_array(v, k) for k, v in c.items()]
    inits.append(numpy_helper.from_array(np.array(0, dtype=np.float32), f"{p}.zerof"))
    mk = helper.make_node
    nodes = [
        mk("Shape", [x], [f"{p}.shape"]),
        mk("Gather", [f"{p}.shape", f"{p}.axis"], [f"{p}.n"], axis=0),  # () int64
        mk("Range", [f"{p}.zero", f"{p}.n", f"{p}.one"], [f"{p}.middle"]),
        mk("Sub", [f"{p}.n", f"{p}.after"], [f"{p}.right"]),
        mk("Concat", [f"{p}.left", f"{p}.middle", f"{p}.right"], [f"{p}.raw"], axis=0),
        mk("Sub", [f"{p}.n", f"{p}.one"], [f"{p}.last"]),
        mk("Cast", [f"{p}.last"], [f"{p}.lastf"], to=TensorProto.FLOAT),
        mk("Cast", [f"{p}.raw"], [f"{p}.rawf"], to=TensorProto.FLOAT),
        mk("Clip", [f"{p}.rawf", f"{p}.zerof", f"{p}.lastf"], [f"{p}.clipped"]),
        mk("Cast", [f"{p}.clipped"], [f"{p}.idx"], to=TensorProto.INT64),
    ]
    return nodes, inits, f"{p}.idx"


def build_rgb_onnx_model(model: SRCNN, scale: int, *, uint8: bool = False, opset: int = DEFAULT_OPSET,
                         meta: dict | None = None):
    """The whole enlargement of :func:`tinysr.upscale` as one ONNX graph (``tinysr export --rgb``).

    Input ``rgb`` ``(N, 3, H, W)``, float32 on [0, 1] (or uint8 0..255 with ``uint8=True``), ``N``,
    ``H``, ``W`` free; output ``sr`` ``(N, 3, scale*H, scale*W)`` of the same type, clipped to [0, 1]
    (uint8: rounded half up, as tinysr's Matlab ``uint8``). The steps are tinysr's
    (:mod:`tinysr.image.enlarge`): Matlab BT.601 YCbCr (a 1x1 convolution), Matlab bicubic (ONNX
    ``Resize``, cubic, coefficient -0.5, ``half_pixel``, on the image extended by 2 pixels per side
    as Matlab mirrors its edges, then cropped: a plain ``Resize`` clamps at the edge instead and
    differs from Matlab in the outermost output rows and columns), the network on Y, YCbCr back to
    RGB, clipped. Computed in float32, where tinysr uses float64: within one grey level of
    :func:`tinysr.upscale` (``tests/test_export_onnx.py`` measures it).
    """
    onnx = _import_onnx()
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    from tinysr.protocol.color import _OFFSET, _T  # noqa: PLC0415  (Matlab's matrix, the one tinysr uses)

    _check_opset(onnx, opset)
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 2:
        raise ValueError(f"scale must be an integer >= 2, got {scale!r}")
    scale, margin = int(scale), 2  # the cubic kernel reaches 2 input pixels out
    mk = helper.make_node
    consts = {
        "to_ycbcr.weight": (_T / 255).reshape(3, 3, 1, 1), "to_ycbcr.bias": _OFFSET / 255,
        "to_rgb.weight": (255 * np.linalg.inv(_T)).reshape(3, 3, 1, 1), "to_rgb.bias": -(np.linalg.inv(_T) @ _OFFSET),
        "resize.scales": np.array([1, 1, scale, scale]), "resize.roi": np.zeros(0), "zero": np.array(0.0),
        "one": np.array(1.0), **({"inv255": np.array(1 / 255), "c255": np.array(255.0), "half": np.array(0.5)}
                                 if uint8 else {}),
    }
    inits = [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in consts.items()]
    ints = {"crop.starts": [margin * scale] * 2, "crop.ends": [-margin * scale] * 2, "crop.axes": [2, 3],
            "y.starts": [0], "y.ends": [1], "c.starts": [1], "c.ends": [3], "c.axes": [1]}
    inits += [numpy_helper.from_array(np.array(v, dtype=np.int64), k) for k, v in ints.items()]
    nodes = []
    x = "rgb"
    if uint8:
        nodes += [mk("Cast", [x], ["rgb.float"], to=TensorProto.FLOAT), mk("Mul", ["rgb.float", "inv255"], ["rgb01"])]
        x = "rgb01"
    nodes.append(mk("Conv", [x, "to_ycbcr.weight", "to_ycbcr.bias"], ["ycbcr"], name="to_ycbcr", kernel_shape=[1, 1]))
    x = "ycbcr"
    for axis in (2, 3):
        more, more_inits, idx = _mirror_indices(helper, numpy_helper, x, axis, margin)
        nodes += more + [mk("Gather", [x, idx], [f"extended{axis}"], axis=axis)]
        inits += more_inits
        x = f"extended{axis}"
    nodes += [
        mk("Resize", [x, "resize.roi", "resize.scales"], ["up.extended"], name="bicubic", mode="cubic", cubic_coeff_a=-0.5,
           coordinate_transformation_mode="half_pixel", exclude_outside=0),
        mk("Slice", ["up.extended", "crop.starts", "crop.ends", "crop.axes"], ["up"]),
        mk("Slice", ["up", "y.starts", "y.ends", "c.axes"], ["up.y"]),
        mk("Slice", ["up", "c.starts", "c.ends", "c.axes"], ["up.cbcr"]),
    ]
    net_nodes, net_inits = _network(helper, numpy_helper, _params(model), "up.y", "sr.y")
    nodes += net_nodes + [
        mk("Concat", ["sr.y", "up.cbcr"], ["sr.ycbcr"], axis=1),
        mk("Conv", ["sr.ycbcr", "to_rgb.weight", "to_rgb.bias"], ["sr.rgb"], name="to_rgb", kernel_shape=[1, 1]),
    ]
    inits += net_inits
    if uint8:
        nodes += [mk("Clip", ["sr.rgb", "zero", "one"], ["sr.clipped"]), mk("Mul", ["sr.clipped", "c255"], ["sr.255"]),
                  mk("Add", ["sr.255", "half"], ["sr.half"]), mk("Floor", ["sr.half"], ["sr.rounded"]),
                  mk("Cast", ["sr.rounded"], [OUTPUT_NAME], to=TensorProto.UINT8)]
    else:
        nodes.append(mk("Clip", ["sr.rgb", "zero", "one"], [OUTPUT_NAME]))
    elem = TensorProto.UINT8 if uint8 else TensorProto.FLOAT
    unit = "uint8 0..255" if uint8 else "float32 on [0, 1]"
    graph = helper.make_graph(
        nodes, f"tinysr_rgb_x{scale}_{model.arch}",
        [helper.make_tensor_value_info("rgb", elem, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, elem, ["N", 3, f"{scale}H", f"{scale}W"])],
        initializer=inits,
        doc_string=f"tinysr x{scale}: RGB {unit} (N, 3, H, W) -> RGB {unit} (N, 3, {scale}H, {scale}W): Matlab "
                   "BT.601 YCbCr, Matlab bicubic, SRCNN on Y, back to RGB, clipped")
    props = _metadata(model, {**(meta or {}), "scale": scale})
    props.update(input=f"RGB {unit}, (N, 3, H, W)", output=f"RGB {unit}, (N, 3, {scale}H, {scale}W), clipped",
                 pipeline="tinysr.upscale: BT.601 YCbCr, Matlab bicubic, SRCNN on Y, RGB")
    return _finish(onnx, helper, graph, opset, props)


def export_onnx(model: SRCNN, path, *, opset: int = DEFAULT_OPSET, meta: dict | None = None,
                overwrite: bool = False, rgb_scale: int | None = None, uint8: bool = False) -> Path:
    """Write ``model`` as ONNX to ``path`` (atomically) and return it: the Y network
    (:func:`build_onnx_model`), or with ``rgb_scale`` the whole RGB enlargement by that scale
    (:func:`build_rgb_onnx_model`, uint8 in and out with ``uint8``).

    An existing ``path`` is replaced only with ``overwrite=True``; otherwise ``FileExistsError``
    and nothing is written. ``ImportError`` naming ``pip install "tinysr[onnx]"`` without onnx.
    """
    if rgb_scale is not None:
        proto = build_rgb_onnx_model(model, rgb_scale, uint8=uint8, opset=opset, meta=meta)
    else:
        proto = build_onnx_model(model, opset=opset, meta=meta)
    data = proto.SerializeToString()
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
    p = OneLineParser(prog=prog, description="Export SRCNN weights as an ONNX model: the network (Y in [0, 1], "
                                             "any N, H, W) or, with --rgb, the whole RGB enlargement.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("-s", "--scale", type=int, choices=(2, 3, 4), help="export the bundled weights for this scale")
    which.add_argument("--weights", metavar="FILE", help="export a tinysr .npz (model or checkpoint) or the authors' .mat")
    p.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.onnx if it exists")
    p.add_argument("--rgb", action="store_true",
                   help="export the whole enlargement: RGB (N, 3, H, W) float on [0, 1] in, RGB at the scale out "
                        "(YCbCr, Matlab bicubic, the network on Y, back to RGB, in the graph)")
    p.add_argument("--uint8", action="store_true", help="with --rgb: uint8 0..255 in and out instead of float")
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
        if args.uint8 and not args.rgb:
            raise ValueError("--uint8 applies to --rgb models")
        _import_onnx()  # before loading weights: a missing extra is the first thing to say
        model, meta, _ = _load(args)
        rgb_scale = None
        if args.rgb:
            rgb_scale = meta.get("scale")
            if not isinstance(rgb_scale, int) or isinstance(rgb_scale, bool):
                raise ValueError(f"{args.weights}: the weights do not say which scale they were trained for, "
                                 "which --rgb needs; export the bundled ones with -s, or a tinysr .npz")
        try:
            export_onnx(model, out, opset=args.opset, meta=meta, overwrite=args.overwrite, rgb_scale=rgb_scale,
                        uint8=args.uint8)
        except FileExistsError:  # created by someone else since the check above
            raise ValueError(f"{out} exists (use --overwrite to replace it)") from None
        print(out)
        return 0

    return run_main(prog, work)


if __name__ == "__main__":
    sys.exit(main())
