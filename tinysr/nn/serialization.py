"""Saving and loading models and training checkpoints as ``.npz`` (no pickle).

One format for both. Keys:

- ``conv1.weight`` ... ``conv3.bias``: the parameters (host arrays).
- ``__config__``: JSON of the architecture ``{"f1", "f2", "f3", "n1", "n2"}``.
- ``__meta__``: JSON object, free-form (scale, how it was trained); optional.
- In checkpoints only: ``optim.<slot>.<param name>`` (the optimiser's arrays, e.g.
  ``optim.velocity.conv1.weight``), ``__optim__`` (JSON of its hyper-parameters and scalar
  state) and ``__state__`` (JSON: ``epoch``, ``best_psnr``, ``elapsed``, ``rng``, ``log``); their
  ``__meta__["recipe"]`` holds the run's settings, which ``train.py --resume`` takes back.

Every write is atomic (temporary file + rename). Reading never trusts the file: the zip's
members are checked by name, each ``.npy`` header's shape and dtype is compared with what
``__config__`` implies *before* any data is read (so a header claiming 10^12 elements costs
nothing), and the JSON entries are checked for the structure ``train.py --resume`` relies on.
Every problem is a ``ValueError`` naming the file.
"""

from __future__ import annotations

import json
import math
import struct
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from tinysr.atomic import atomic_write
from tinysr.errors import NoSuchFile
from tinysr.nn.model import CONFIG_KEYS, PARAM_NAMES, SRCNN, layer_shapes, param_shapes
from tinysr.nn.optim import Adam, MomentumSGD
from tinysr.nn.recipe import NOT_RECORDED, SETTINGS, is_finite_number, loadable
from tinysr.ops.backend import to_device, to_numpy
from tinysr.ops.shapes import shrink

OPTIM = "optim."
_JSON_KEYS = ("__config__", "__meta__", "__optim__", "__state__")
OPTIMIZERS = {"MomentumSGD": MomentumSGD.SLOTS, "Adam": Adam.SLOTS}
_SLOTS = frozenset(s for slots in OPTIMIZERS.values() for s in slots)

# What a loadable network may be. Kernels are odd (centred) and the three together lose at most
# 16 pixels per side, what tinysr's 33x33 training patches allow; the widths and the parameter
# count are far beyond any SRCNN (the paper's largest, 9-5-5 with 128/64 filters, has 0.2M).
MAX_KERNEL = 25
MAX_SHRINK = 16
MAX_WIDTH = 1024
MAX_PARAMS = 1 << 24
# A JSON entry is a 0-d unicode array of at most this many bytes (4 per character).
MAX_JSON_BYTES = 1 << 22
_UNREADABLE = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, KeyError, IndexError,
               NotImplementedError, RuntimeError, struct.error, ArithmeticError, UnicodeError, TypeError,
               SyntaxError, tokenize.TokenError)  # the last two: numpy parsing a garbled .npy header
MAX_MESSAGE = 400


def check_config(config, source) -> dict:
    """Return ``config`` if it is a network tinysr can run, else ``ValueError`` naming ``source``.

    ``config``: ``{"f1", "f2", "f3", "n1", "n2"}`` as plain integers (``bool`` refused); kernels
    odd and at most :data:`MAX_KERNEL`, total shrink at most :data:`MAX_SHRINK`, widths at most
    :data:`MAX_WIDTH`, parameter count at most :data:`MAX_PARAMS`.
    """
    keys = CONFIG_KEYS
    if (not isinstance(config, dict) or set(config) != set(keys)
            or any(not _is_int(config[k]) or config[k] < 1 for k in keys)):
        raise ValueError(f"{source}: the network config must give exactly the positive integers {keys}, "
                         f"got {_short(config)}")
    even = [k for k in ("f1", "f2", "f3") if config[k] % 2 == 0 or config[k] > MAX_KERNEL]
    if even:
        raise ValueError(f"{source}: kernel size {', '.join(f'{k}={config[k]}' for k in even)} is not an odd "
                         f"size up to {MAX_KERNEL} (config {config})")
    lost = shrink(shape[2] for shape in layer_shapes(config).values())  # each layer's kernel, from the model
    if lost > MAX_SHRINK:
        raise ValueError(f"{source}: kernels {config['f1']}-{config['f2']}-{config['f3']} lose {lost} pixels "
                         f"per side, more than the {MAX_SHRINK} tinysr's 33x33 training patches allow")
    wide = [k for k in ("n1", "n2") if config[k] > MAX_WIDTH]
    count = sum(math.prod(s) for s in param_shapes(config).values())
    if wide or count > MAX_PARAMS:
        raise ValueError(f"{source}: network {config} is implausibly large ({count} parameters; "
                         f"at most {MAX_WIDTH} filters per layer and {MAX_PARAMS} parameters)")
    return config


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_is_finite = is_finite_number


def _short(obj, n: int = 120) -> str:
    s = repr(obj)
    return s if len(s) <= n else s[:n] + "..."


def _json_array(obj) -> np.ndarray:
    return np.array(json.dumps(obj, sort_keys=True))


def _write_npz(path, arrays: dict, replace: bool = True) -> Path:
    return atomic_write(path, lambda f: np.savez(f, **arrays), suffix=".npz.tmp", replace=replace)


def save_model(path, model: SRCNN, meta: dict | None = None, *, replace: bool = True) -> Path:
    """Write ``model``'s parameters (as host arrays), config and ``meta`` to ``path`` atomically.

    ``replace=False``: ``FileExistsError`` if ``path`` exists (nothing is replaced).
    """
    arrays = {name: to_numpy(a) for name, a in model.params.items()}
    arrays["__config__"] = _json_array(model.config)
    arrays["__meta__"] = _json_array(meta or {})
    return _write_npz(path, arrays, replace)


def save_checkpoint(path, model: SRCNN, optimizer, state: dict, meta: dict | None = None) -> Path:
    """Write parameters, the optimiser's arrays and hyper-parameters, and ``state`` atomically.

    ``state``: ``{"epoch": int >= 0, "best_psnr": float (dB, -inf before any evaluation),
    "elapsed": seconds >= 0, "rng": a PCG64 ``bit_generator.state``, optionally "log": a list of
    the epochs' JSON records}``, checked as
    :func:`read_npz` checks it, so no checkpoint is written that could not be resumed.
    """
    hyper = optimizer.hyperparameters()
    _check_state(state, path)
    _check_optim(hyper, path)
    arrays = {name: to_numpy(a) for name, a in model.params.items()}
    for key, v in optimizer.state_dict().items():
        arrays[OPTIM + key] = to_numpy(v)
    arrays["__config__"] = _json_array(model.config)
    arrays["__meta__"] = _json_array(meta or {})
    arrays["__optim__"] = _json_array(hyper)
    arrays["__state__"] = _json_array(state)
    return _write_npz(path, arrays)


def restore(model: SRCNN, optimizer, rng: np.random.Generator, ckpt: dict) -> dict:
    """Continue from ``ckpt`` (:func:`read_npz`'s dict of a training checkpoint): its weights into
    ``model``, its optimiser arrays (cast to the model's dtype, on its device) and scalars into
    ``optimizer``, its generator state into ``rng``. Returns the checkpoint's ``state``
    (``epoch``, ``best_psnr``, ``elapsed``, ``rng``, maybe ``log``)."""
    model.set_params(ckpt["params"])
    optimizer.load_state_dict({k: to_device(v.astype(model.dtype), model.xp) for k, v in ckpt["optim_state"].items()},
                              ckpt["optim"])
    rng.bit_generator.state = ckpt["state"]["rng"]
    return ckpt["state"]


def _check_state(state, path) -> None:
    """``__state__`` as ``train.py --resume`` reads it (see :func:`save_checkpoint`)."""
    def bad(what):
        return ValueError(f"{path}: training state (__state__) {what}")

    if not isinstance(state, dict):
        raise bad(f"is not a JSON object: {_short(state)}")
    missing = [k for k in ("epoch", "best_psnr", "elapsed", "rng") if k not in state]
    if missing:
        raise bad(f"lacks {missing}")
    if not _is_int(state["epoch"]) or not 0 <= state["epoch"] <= 2 ** 53:
        raise bad(f"epoch must be an integer >= 0, got {_short(state['epoch'])}")
    bp = state["best_psnr"]
    if not isinstance(bp, (int, float)) or isinstance(bp, bool) or (not _is_finite(bp) and bp != -math.inf):
        raise bad(f"best_psnr must be a number (dB) or -Infinity, got {_short(bp)}")
    if not _is_finite(state["elapsed"]) or state["elapsed"] < 0:
        raise bad(f"elapsed must be a finite number of seconds >= 0, got {_short(state['elapsed'])}")
    _check_rng(state["rng"], bad)
    if "log" in state and (not isinstance(state["log"], list) or not all(isinstance(r, dict) for r in state["log"])):
        raise bad(f"log must be a list of JSON objects (one per epoch), got {_short(state['log'])}")


def _check_recipe(meta: dict, path) -> None:
    """A checkpoint's ``meta["recipe"]``, if any: a JSON object whose known settings have the types
    of the recipe's schema (:mod:`tinysr.nn.recipe`)."""
    if "recipe" not in meta:
        return
    recipe = meta["recipe"]
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: __meta__ recipe is not a JSON object: {_short(recipe)}")
    for setting in SETTINGS:  # each recorded setting of the schema, with its type (train.py --resume takes them back)
        key = setting.name
        if setting.cls != NOT_RECORDED and key in recipe and not loadable(setting, recipe[key]):
            raise ValueError(f"{path}: __meta__ recipe {key} must be {setting.describe()}, got {_short(recipe[key])}")


def _check_meta_scale(meta: dict, path) -> None:
    """The scale ``meta`` (or its recipe) names, if any, must be one tinysr enlarges by (2, 3, 4):
    weights that claim x7 or x-3 are refused at load, not used to enlarge by 7 or fail per image."""
    recipe = meta.get("recipe")
    for where, holder in (("scale", meta), ("recipe scale", recipe if isinstance(recipe, dict) else {})):
        if "scale" in holder and not (_is_int(holder["scale"]) and holder["scale"] in (2, 3, 4)):
            raise ValueError(f"{path}: its metadata ({where}) names scale {_short(holder['scale'])}; "
                             "tinysr enlarges by 2, 3 or 4")


def _check_train_data(meta: dict, path) -> None:
    """A checkpoint's ``meta["train_data"]``, if any: ``{"dir": path, "files": {name: sha256 hex}}``,
    the training images the run is on (``train.py --resume`` compares them with the folder's)."""
    data = meta.get("train_data")
    if data is None:
        return
    files = data.get("files") if isinstance(data, dict) else None
    if not (isinstance(data, dict) and isinstance(data.get("dir"), str) and isinstance(files, dict)
            and all(isinstance(v, str) and len(v) == 64 for v in files.values())):
        raise ValueError(f"{path}: __meta__ train_data must be {{dir, files: {{name: sha256}}}}, got {_short(data)}")


def _check_rng(rng, bad) -> None:
    """A PCG64 ``bit_generator.state`` (what ``np.random.default_rng`` keeps)."""
    inner = rng.get("state") if isinstance(rng, dict) else None
    ok = (isinstance(rng, dict) and set(rng) == {"bit_generator", "state", "has_uint32", "uinteger"}
          and rng["bit_generator"] == "PCG64" and isinstance(inner, dict) and set(inner) == {"state", "inc"}
          and all(_is_int(inner[k]) and 0 <= inner[k] < 2 ** 128 for k in inner)
          and _is_int(rng["has_uint32"]) and rng["has_uint32"] in (0, 1)
          and _is_int(rng["uinteger"]) and 0 <= rng["uinteger"] < 2 ** 32)
    if ok:
        try:
            np.random.PCG64().state = rng
        except (TypeError, ValueError, KeyError, OverflowError):
            ok = False
    if not ok:
        raise bad(f"rng is not a PCG64 generator state: {_short(rng)}")


def _check_optim(optim, path) -> tuple[str, ...]:
    """``__optim__``: a known optimiser with finite hyper-parameters; returns its state slots."""
    def bad(what):
        return ValueError(f"{path}: optimiser settings (__optim__) {what}")

    if not isinstance(optim, dict) or optim.get("type") not in OPTIMIZERS:
        kind = optim.get("type") if isinstance(optim, dict) else optim
        raise bad(f"name no known optimiser ({', '.join(OPTIMIZERS)}): {_short(kind)}")
    lr = optim.get("lr")
    if not isinstance(lr, dict) or set(lr) != set(PARAM_NAMES) or any(not _is_finite(v) or v < 0 for v in lr.values()):
        raise bad(f"lr must map every parameter to a finite rate >= 0, got {_short(lr)}")
    if optim["type"] == "MomentumSGD":
        for key in ("momentum", "weight_decay"):
            if not _is_finite(optim.get(key)):
                raise bad(f"{key} must be a finite number, got {_short(optim.get(key))}")
    else:
        betas, t = optim.get("betas"), optim.get("t")
        if not isinstance(betas, list) or len(betas) != 2 or not all(_is_finite(b) for b in betas):
            raise bad(f"betas must be two finite numbers, got {_short(betas)}")
        if not _is_finite(optim.get("eps")) or optim["eps"] <= 0:
            raise bad(f"eps must be a finite number > 0, got {_short(optim.get('eps'))}")
        if not _is_int(t) or not 0 <= t <= 2 ** 53:
            raise bad(f"t (the step count) must be an integer >= 0, got {_short(t)}")
    return OPTIMIZERS[optim["type"]]


def _member_key(name: str) -> str | None:
    """The array key of a zip member ``<key>.npy`` if tinysr may write it, else ``None``."""
    if not name.endswith(".npy"):
        return None
    key = name[:-4]
    if key in PARAM_NAMES or key in _JSON_KEYS:
        return key
    if key.startswith(OPTIM):
        slot, _, param = key[len(OPTIM):].partition(".")
        if slot in _SLOTS and param in PARAM_NAMES:
            return key
    return None


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, check) -> np.ndarray:
    """Read one ``.npy`` member; ``check(shape, dtype)`` raises before any data is read."""
    with zf.open(info) as fp:
        version = npy_format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
        check(shape, dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if info.file_size != fp.tell() + nbytes:
            raise ValueError(f"holds {info.file_size - fp.tell()} bytes of data, its header describes {nbytes}")
        data = fp.read(nbytes)
        if len(data) != nbytes or fp.read(1):  # reading to the end also checks the CRC
            raise ValueError("truncated")
    arr = np.frombuffer(bytearray(data), dtype=dtype)
    return arr.reshape(shape, order="F" if fortran else "C")


def read_npz(path) -> dict:
    """Read and validate a tinysr ``.npz``.

    Returns ``{"config", "params", "meta", "optim_state", "optim", "state"}`` with host arrays;
    the last three are ``None`` for a plain model file. ``optim_state`` maps ``"<slot>.<param>"``
    to arrays, as the optimisers' ``state_dict()`` does.
    """
    path = Path(path)
    if not path.is_file():
        raise NoSuchFile(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as zf:
            return _read_zip(zf, path)
    except RecursionError:  # a deeply nested JSON entry
        raise ValueError(f"{path}: a JSON entry is nested too deeply") from None
    except _UNREADABLE as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(f"{path}: "):
            msg = str(exc)
        else:
            msg = f"{path}: not a readable tinysr .npz file ({type(exc).__name__}: {exc})"
        msg = " ".join(msg.split())  # one line, whatever numpy or zipfile said
        raise ValueError(msg if len(msg) <= MAX_MESSAGE else msg[:MAX_MESSAGE] + "...") from None


def _read_zip(zf: zipfile.ZipFile, path: Path) -> dict:
    members, unexpected = {}, []
    for info in zf.infolist():
        key = _member_key(info.filename)
        if key is None or key in members:
            unexpected.append(info.filename.removesuffix(".npy") + (" (twice)" if key else ""))
            continue
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ValueError(f"{path}: entry {key} uses zip compression {info.compress_type} "
                             "(only stored or deflated entries are read)")
        members[key] = info
    if "__config__" not in members:
        raise ValueError(f"{path}: not a tinysr model file (no __config__ entry)")
    missing = [k for k in PARAM_NAMES if k not in members]
    if missing or unexpected:
        raise ValueError(f"{path}: missing parameters {missing}, unexpected entries {sorted(unexpected)}")

    def reading(key, check):
        try:
            return _read_member(zf, members[key], check)
        except ValueError as exc:
            if str(exc).startswith(f"{path}: "):
                raise
            raise ValueError(f"{path}: entry {key}: {exc}") from None

    js = {}
    for key in _JSON_KEYS:
        if key not in members:
            continue

        def is_text(shape, dtype, key=key):
            if shape != () or dtype.kind != "U" or dtype.itemsize > MAX_JSON_BYTES:
                raise ValueError(f"{path}: entry {key} is not a JSON text (shape {shape}, dtype {dtype})")

        text = str(reading(key, is_text)[()])
        try:
            js[key] = json.loads(text)
        except ValueError as exc:  # JSONDecodeError, or an integer with too many digits
            raise ValueError(f"{path}: entry {key} is not valid JSON ({exc})") from None
    config = check_config(js["__config__"], f"{path}: __config__")
    if not isinstance(js.get("__meta__", {}), dict):
        raise ValueError(f"{path}: __meta__ is not a JSON object: {_short(js['__meta__'])}")
    shapes = param_shapes(config)

    optim_keys = [k for k in members if k.startswith(OPTIM)]
    slots = {}
    for key in optim_keys:
        slot, _, name = key[len(OPTIM):].partition(".")
        slots.setdefault(slot, set()).add(name)
    for slot, names in slots.items():
        if names != set(PARAM_NAMES):
            raise ValueError(f"{path}: optimiser state {slot!r} covers {sorted(names)}, expected all parameters")
    parts = {"optimiser arrays": bool(optim_keys), "__optim__": "__optim__" in js, "__state__": "__state__" in js}
    if any(parts.values()) and not all(parts.values()):
        raise ValueError(f"{path}: an incomplete checkpoint: has {[k for k, v in parts.items() if v]}, "
                         f"lacks {[k for k, v in parts.items() if not v]}")
    if "__optim__" in js:
        expected_slots = _check_optim(js["__optim__"], path)
        if set(slots) != set(expected_slots):
            raise ValueError(f"{path}: optimiser state has slots {sorted(slots)}, "
                             f"{js['__optim__']['type']} keeps {list(expected_slots)}")
        _check_state(js["__state__"], path)
        _check_recipe(js.get("__meta__", {}), path)
        _check_train_data(js.get("__meta__", {}), path)
    _check_meta_scale(js.get("__meta__", {}), path)

    def read_array(key, group, name):
        def check(shape, dtype):
            if shape != shapes[name]:
                raise ValueError(f"{path}: {group} {name} has shape {shape}, config needs {shapes[name]}")
            if dtype not in (np.float32, np.float64):
                raise ValueError(f"{path}: {group} {name} has dtype {dtype}, expected float32 or float64")

        a = reading(key, check)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{path}: {group} {name} contains NaN or Inf")
        return a

    params = {k: read_array(k, "parameter", k) for k in PARAM_NAMES}
    optim_state = {k[len(OPTIM):]: read_array(k, "optimiser state", k[len(OPTIM):].partition(".")[2])
                   for k in optim_keys}
    for key, a in optim_state.items():  # Adam's second moments are means of squares: a negative one is corrupt
        if key.startswith("v.") and js["__optim__"]["type"] == "Adam" and np.any(a < 0):
            raise ValueError(f"{path}: optimiser state {key} (Adam's second moment) holds negative values; "
                             f"this checkpoint cannot be resumed")
    return {"config": config, "params": params, "meta": js.get("__meta__", {}),
            "optim_state": optim_state or None, "optim": js.get("__optim__"), "state": js.get("__state__")}


def load_model(path, *, dtype=np.float32, xp=np) -> SRCNN:
    """Load a tinysr ``.npz`` (model or checkpoint) as an :class:`SRCNN` on ``xp`` in ``dtype``."""
    d = read_npz(path)
    return SRCNN.from_params(d["config"], d["params"], dtype=dtype, xp=xp)
