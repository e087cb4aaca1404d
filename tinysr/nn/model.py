"""The SRCNN network: conv f1 x f1 (1 -> n1), ReLU, conv f2 x f2 (n1 -> n2), ReLU, conv f3 x f3 (n2 -> 1).

The three layers are :class:`tinysr.nn.layers.Conv2d`; the first two carry their ReLU fused
(``relu=True``), so each ReLU costs no pass of its own over the activations.

Input and output are the luminance (Y) channel in [0, 1], NCHW with one channel. Training
uses ``valid`` convolutions (33x33 -> 21x21 for 9-1-5); inference uses ``replicate``
padding, like the authors' ``SRCNN.m``, so the output has the input's size.
"""

from __future__ import annotations

import numpy as np

from tinysr.nn.layers import Conv2d, as_float_dtype
from tinysr.ops.backend import backend_name, get_array_module, primitives, to_device
from tinysr.ops.engine import Engine
from tinysr.ops.shapes import shrink

CONFIG_KEYS = ("f1", "f2", "f3", "n1", "n2")  # SRCNN's constructor arguments, its whole shape
INITS = ("gaussian", "he")


def layer_shapes(config: dict) -> dict[str, tuple[int, int, int, int]]:
    """The network's shape, stated once: each layer's name and weight shape ``(O, C, kh, kw)``, in
    order (its bias is ``(O,)``). Every layer but the last carries a fused ReLU; the first computes
    no input gradient (:class:`SRCNN`). Parameter names, shapes and per-layer learning rates all
    follow from this table."""
    f1, f2, f3, n1, n2 = (config[k] for k in CONFIG_KEYS)
    return {"conv1": (n1, 1, f1, f1), "conv2": (n2, n1, f2, f2), "conv3": (1, n2, f3, f3)}


LAYER_NAMES = tuple(layer_shapes(dict.fromkeys(CONFIG_KEYS, 1)))
PARAM_NAMES = tuple(f"{layer}.{kind}" for layer in LAYER_NAMES for kind in ("weight", "bias"))


def parse_arch(arch: str) -> tuple[int, int, int]:
    """``"9-1-5"`` -> ``(9, 1, 5)``; ``ValueError`` for anything else."""
    try:
        parts = tuple(int(p) for p in arch.split("-"))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(k < 1 or k % 2 == 0 for k in parts):
        raise ValueError(f"architecture {arch!r} is not of the form f1-f2-f3 with odd sizes, e.g. 9-1-5")
    return parts


def param_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Parameter shapes (:data:`PARAM_NAMES` order) for a config ``{"f1", "f2", "f3", "n1", "n2"}``."""
    return {f"{layer}.{kind}": shape if kind == "weight" else shape[:1]
            for layer, shape in layer_shapes(config).items() for kind in ("weight", "bias")}


def init_params(config: dict, init: str = "gaussian", seed: int = 0, std: float = 1e-3,
                dtype=np.float32) -> dict[str, np.ndarray]:
    """Fresh host parameters.

    ``gaussian``: the paper's N(0, std) weights (std 1e-3), zero biases.
    ``he``: N(0, sqrt(2 / fan_in)) for the ReLU layers and N(0, sqrt(1 / fan_in)) for the last,
    zero biases; it trains much faster than the paper's initialisation.
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}: choose one of {', '.join(INITS)}")
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in param_shapes(config).items():
        if name.endswith("bias"):
            out[name] = np.zeros(shape, dtype=dtype)
            continue
        fan_in = int(np.prod(shape[1:]))
        if init == "gaussian":
            s = std
        else:
            s = np.sqrt((1.0 if name.startswith(LAYER_NAMES[-1] + ".") else 2.0) / fan_in)
        out[name] = (rng.standard_normal(shape) * s).astype(dtype)
    return out


def _views(flat, shapes: dict) -> dict:
    """``{name: view}``: consecutive views of ``flat`` shaped like ``shapes[name]``, in PARAM_NAMES order."""
    out, offset = {}, 0
    for k in PARAM_NAMES:
        shape = shapes[k].shape
        size = int(np.prod(shape))
        out[k] = flat[offset:offset + size].reshape(shape)
        offset += size
    return out


class Params(dict):
    """The model's parameters (or gradients) by name (:data:`PARAM_NAMES` order), plus ``flat``: the
    one 1-D buffer they are views of, laid end to end in that order (None where they are not). An
    optimiser may update ``flat`` in a few array operations, MPI average the gradients' in place."""

    def __init__(self, arrays: dict, flat):
        super().__init__(arrays)
        self.flat = flat


class SRCNN:
    """SRCNN(f1=9, f2=1, f3=5, n1=64, n2=32): the 9-1-5 ECCV network by default.

    ``params`` and ``grads`` are :class:`Params` keyed by :data:`PARAM_NAMES`: the layers' own
    arrays, views into one flat buffer each; parameters are updated in place by an optimiser,
    gradients written in place by :meth:`backward`. ``xp`` picks the device (``numpy`` or
    ``cupy``); ``dtype`` is float32 by default, float64 for gradient checks. ``engine``: how it
    runs (:class:`tinysr.ops.engine.Engine`; see :attr:`engine`).
    """

    def __init__(self, f1: int = 9, f2: int = 1, f3: int = 5, n1: int = 64, n2: int = 32, *,
                 dtype=np.float32, xp=np, init: str = "gaussian", seed: int = 0, std: float = 1e-3,
                 engine: Engine | None = None):
        for key, v in dict(f1=f1, f2=f2, f3=f3, n1=n1, n2=n2).items():
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"SRCNN {key} must be a positive integer, got {v!r}")
        self.config = {"f1": int(f1), "f2": int(f2), "f3": int(f3), "n1": int(n1), "n2": int(n2)}
        self.dtype = as_float_dtype(dtype)
        self.xp = xp
        host = init_params(self.config, init=init, seed=seed, std=std, dtype=self.dtype)
        self._flat = to_device(np.concatenate([host[k].ravel() for k in PARAM_NAMES]), xp)
        self._grad_flat = xp.zeros_like(self._flat)  # the gradients, laid out like the parameters
        p, g = _views(self._flat, host), _views(self._grad_flat, host)
        self._views, self._grad_views = p, g
        for i, name in enumerate(LAYER_NAMES):  # attributes conv1, conv2, conv3
            setattr(self, name, Conv2d(p[f"{name}.weight"], p[f"{name}.bias"], need_input_grad=i > 0,
                                       relu=i < len(LAYER_NAMES) - 1, grads=(g[f"{name}.weight"], g[f"{name}.bias"])))
        self.engine = engine if engine is not None else Engine()

    @property
    def engine(self) -> Engine:
        """How the model runs (:class:`tinysr.ops.engine.Engine`: threads, kept arrays, fast paths);
        assigning one hands it to the layers. It never changes a result."""
        return self._engine

    @engine.setter
    def engine(self, engine: Engine) -> None:
        self._engine = engine
        for layer in self.layers:
            layer.engine = engine

    @classmethod
    def from_arch(cls, arch: str = "9-1-5", **kwargs) -> "SRCNN":
        """Build from an ``"f1-f2-f3"`` string (``9-1-5``, ``9-3-5``, ``9-5-5``)."""
        f1, f2, f3 = parse_arch(arch)
        return cls(f1, f2, f3, **kwargs)

    @classmethod
    def from_params(cls, config: dict, params: dict, *, dtype=np.float32, xp=np, **kwargs) -> "SRCNN":
        """A model with ``config`` and the given host or device ``params`` (converted to ``dtype``)."""
        model = cls(**{k: config[k] for k in CONFIG_KEYS}, dtype=dtype, xp=xp, **kwargs)
        model.set_params(params)
        return model

    @property
    def arch(self) -> str:
        return "{f1}-{f2}-{f3}".format(**self.config)

    @property
    def layers(self) -> tuple:
        """The :class:`~tinysr.nn.layers.Conv2d` layers in order (:func:`layer_shapes`)."""
        return tuple(getattr(self, name) for name in LAYER_NAMES)

    def named_layers(self):
        """``(name, layer)`` pairs in order: ``("conv1", self.conv1)``, ..."""
        return zip(LAYER_NAMES, self.layers)

    @property
    def primitives(self):
        """The primitives of the model's device (:class:`tinysr.ops.primitives.Primitives`)."""
        return primitives(self.layers[0].weight)

    @property
    def params(self) -> dict:
        """A :class:`Params`; its ``flat`` is None if a layer's arrays were replaced from outside."""
        return self._by_name("weight", "bias", self._views, self._flat)

    @property
    def grads(self) -> dict:
        """A :class:`Params` of the last :meth:`backward`'s gradients (None before the first), views
        into one flat buffer (``flat``) that the next :meth:`backward` overwrites."""
        return self._by_name("grad_weight", "grad_bias", self._grad_views, self._grad_flat)

    def _by_name(self, weight: str, bias: str, views: dict, flat) -> "Params":
        # The layers' `weight` and `bias` attributes under PARAM_NAMES; `flat` while each is still its view.
        arrays = {f"{name}.{kind}": getattr(layer, attr) for name, layer in self.named_layers()
                  for kind, attr in (("weight", weight), ("bias", bias))}
        intact = all(arrays[k] is views[k] for k in PARAM_NAMES)
        return Params(arrays, flat if intact else None)

    @property
    def shrink(self) -> int:
        """Pixels lost per side by ``valid`` training convolutions (6 for 9-1-5)."""
        return shrink(layer.weight.shape[2] for layer in self.layers)

    def set_params(self, params: dict) -> None:
        """Copy ``params`` (host or same-device arrays) into the model, checking names and shapes.

        Host arrays are moved to the model's device explicitly; values are cast to the model dtype
        and copied into the model's own (flat-buffer) arrays. Raises ``ValueError`` naming
        missing/unexpected keys or a wrong shape.
        """
        expected = param_shapes(self.config)
        missing = [k for k in expected if k not in params]
        extra = [k for k in params if k not in expected]
        if missing or extra:
            raise ValueError(f"parameters do not match SRCNN {self.arch}: missing {missing}, unexpected {extra}")
        for name, shape in expected.items():
            if tuple(params[name].shape) != shape:
                raise ValueError(f"parameter {name} has shape {tuple(params[name].shape)}, SRCNN {self.arch} needs {shape}")
        for prefix, layer in self.named_layers():
            layer.weight = self._views[f"{prefix}.weight"]
            layer.bias = self._views[f"{prefix}.bias"]
            layer.weight[...] = to_device(params[f"{prefix}.weight"], self.xp).astype(self.dtype, copy=False)
            layer.bias[...] = to_device(params[f"{prefix}.bias"], self.xp).astype(self.dtype, copy=False)

    def forward(self, x, padding: str = "valid", train: bool = True):
        """``x`` ``(N, 1, H, W)`` Y in [0, 1] -> ``(N, 1, Ho, Wo)``; no clipping.

        ``padding="valid"`` shrinks by :attr:`shrink` per side (training); ``"replicate"``
        (the authors' inference) or ``"zero"`` keep the size. ``train=False`` caches nothing
        for backward, which keeps inference memory to the live activations.
        """
        for layer in self.layers:  # each ReLU but the last fused into its conv
            x = layer.forward(x, padding, train)
        return x

    def backward(self, dy) -> None:
        """Back-propagate ``dy`` (shape of the output); fills :attr:`grads`. Layer 1 computes no input gradient."""
        for layer in reversed(self.layers):  # through the fused ReLUs; the first layer returns None
            dy = layer.backward(dy)

    def predict(self, y):
        """Restore one bicubic-enlarged Y plane ``(H, W)`` on [0, 1] -> ``(H, W)`` (replicate
        padding, no clipping). SRCNN does not enlarge: ``y`` is the luma of an image already
        bicubic-upscaled to the output size (:func:`tinysr.upscale` does the whole pipeline).

        ``y`` must be a 2-D float array on the model's device and of its dtype; a ``ValueError``
        says what is wrong with anything else (uint8 0..255 pixels, an RGB ``(H, W, 3)`` image, a
        host plane on the 0..255 scale). Runs through :attr:`engine`'s
        :meth:`tinysr.ops.engine.Engine.predict`, which picks the fastest path (equal to the
        layer-by-layer forward pass to float rounding); the result is in the model's dtype.
        """
        self._check_plane(y)
        return self.engine.predict(self, y)

    def _check_plane(self, y) -> None:
        """``ValueError`` unless ``y`` is what :meth:`predict` restores (a float Y plane on [0, 1])."""
        shape, dtype = tuple(getattr(y, "shape", ())), getattr(y, "dtype", None)
        if len(shape) != 2:
            raise ValueError(f"SRCNN.predict restores one Y plane (H, W), got shape {shape}: convert an RGB "
                             "image to Y (BT.601) and bicubic-enlarge it first, or use tinysr.upscale")
        if dtype is None or np.dtype(dtype).kind != "f":
            raise ValueError(f"SRCNN.predict takes a float Y plane on [0, 1], got {dtype}: divide uint8 "
                             "pixels by 255 (or use tinysr.upscale)")
        # Bicubic overshoot leaves a [0, 1] plane within about [-0.3, 1.3]; 0..255 values are far outside.
        # Checked on host arrays only: on the GPU reading the range back would stall the device.
        if self.xp is np and y.size and (float(y.max()) > 2.0 or float(y.min()) < -1.0):
            raise ValueError(f"SRCNN.predict takes Y on [0, 1], got values {float(y.min()):.4g}..{float(y.max()):.4g}: "
                             "divide 0..255 values by 255")

    def gpu_fused(self, h: int, w: int) -> bool:
        """Whether :meth:`predict` on CuPy runs an ``h x w`` image through the fused kernels."""
        return self.engine.gpu_fused(self, h, w)

    def to(self, xp) -> "SRCNN":
        """A copy of this model on array module ``xp`` (explicit host/device transfer)."""
        return SRCNN.from_params(self.config, self.params, dtype=self.dtype, xp=xp)

    def astype(self, dtype) -> "SRCNN":
        """A copy of this model in ``dtype`` (float32 or float64), on the same device."""
        return SRCNN.from_params(self.config, self.params, dtype=dtype, xp=self.xp)

    def __repr__(self) -> str:
        xp = get_array_module(self.layers[0].weight)
        return f"SRCNN({self.arch}, n1={self.config['n1']}, n2={self.config['n2']}, {self.dtype}, {backend_name(xp)})"
