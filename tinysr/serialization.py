"""Saving and loading models and training checkpoints as ``.npz`` (no pickle).

One format for both. Keys:

- ``conv1.weight`` ... ``conv3.bias``: the parameters (host arrays).
- ``__config__``: JSON of the architecture ``{"f1", "f2", "f3", "n1", "n2"}``.
- ``__meta__``: JSON, free-form (scale, how it was trained); optional.
- In checkpoints only: ``optim.<slot>.<param name>`` (the optimiser's arrays, e.g.
  ``optim.velocity.conv1.weight``), ``__optim__`` (JSON of its hyper-parameters and scalar
  state) and ``__state__`` (JSON: epoch, RNG state, ...).

Every write is atomic (temporary file + rename); every read checks keys, shapes, dtypes and
finiteness and raises ``ValueError`` naming the file and the problem.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .backend import to_numpy
from .model import PARAM_NAMES, SRCNN, param_shapes

OPTIM = "optim."
_JSON_KEYS = ("__config__", "__meta__", "__optim__", "__state__")


def _json_array(obj) -> np.ndarray:
    return np.array(json.dumps(obj, sort_keys=True))


def _write_npz(path, arrays: dict) -> Path:
    return atomic_write(path, lambda f: np.savez(f, **arrays), suffix=".npz.tmp")


def save_model(path, model: SRCNN, meta: dict | None = None) -> Path:
    """Write ``model``'s parameters (as host arrays), config and ``meta`` to ``path`` atomically."""
    arrays = {name: to_numpy(a) for name, a in model.params.items()}
    arrays["__config__"] = _json_array(model.config)
    arrays["__meta__"] = _json_array(meta or {})
    return _write_npz(path, arrays)


def save_checkpoint(path, model: SRCNN, optimizer, state: dict, meta: dict | None = None) -> Path:
    """Write parameters, the optimiser's arrays and hyper-parameters, and ``state`` atomically."""
    arrays = {name: to_numpy(a) for name, a in model.params.items()}
    for key, v in optimizer.state_dict().items():
        arrays[OPTIM + key] = to_numpy(v)
    arrays["__config__"] = _json_array(model.config)
    arrays["__meta__"] = _json_array(meta or {})
    arrays["__optim__"] = _json_array(optimizer.hyperparameters())
    arrays["__state__"] = _json_array(state)
    return _write_npz(path, arrays)


def read_npz(path) -> dict:
    """Read and validate a tinysr ``.npz``.

    Returns ``{"config", "params", "meta", "optim_state", "optim", "state"}`` with host arrays;
    the last three are ``None`` for a plain model file. ``optim_state`` maps ``"<slot>.<param>"``
    to arrays, as the optimisers' ``state_dict()`` does.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:
        raise ValueError(f"{path}: not a readable tinysr .npz file ({exc})") from None
    if "__config__" not in raw:
        raise ValueError(f"{path}: not a tinysr model file (no __config__ entry)")
    js = {}
    for key in _JSON_KEYS:
        if key in raw:
            try:
                js[key] = json.loads(str(raw.pop(key)))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: entry {key} is not valid JSON ({exc})") from None
    config = js["__config__"]
    keys = ("f1", "f2", "f3", "n1", "n2")
    if not isinstance(config, dict) or any(not isinstance(config.get(k), int) or config[k] < 1 for k in keys):
        raise ValueError(f"{path}: __config__ must give positive integers {keys}, got {config!r}")
    shapes = param_shapes(config)
    optim_state = {k[len(OPTIM):]: raw.pop(k) for k in list(raw) if k.startswith(OPTIM)}
    params = raw
    missing = [k for k in PARAM_NAMES if k not in params]
    unexpected = sorted(k for k in params if k not in PARAM_NAMES)
    if missing or unexpected:
        raise ValueError(f"{path}: missing parameters {missing}, unexpected entries {unexpected}")
    slots = {}
    for key in optim_state:
        slot, _, name = key.partition(".")
        slots.setdefault(slot, set()).add(name)
    for slot, names in slots.items():
        if names != set(PARAM_NAMES):
            raise ValueError(f"{path}: optimiser state {slot!r} covers {sorted(names)}, expected all parameters")
    for group, arrays in (("parameter", params),
                          ("optimiser state", {k.partition(".")[2]: a for k, a in optim_state.items()})):
        for name, a in arrays.items():
            if name not in shapes:
                raise ValueError(f"{path}: {group} for unknown parameter {name!r}")
            if a.shape != shapes[name]:
                raise ValueError(f"{path}: {group} {name} has shape {a.shape}, config needs {shapes[name]}")
            if a.dtype not in (np.float32, np.float64):
                raise ValueError(f"{path}: {group} {name} has dtype {a.dtype}, expected float32 or float64")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{path}: {group} {name} contains NaN or Inf")
    return {"config": config, "params": params, "meta": js.get("__meta__", {}),
            "optim_state": optim_state or None, "optim": js.get("__optim__"), "state": js.get("__state__")}


def load_model(path, *, dtype=np.float32, xp=np) -> SRCNN:
    """Load a tinysr ``.npz`` (model or checkpoint) as an :class:`SRCNN` on ``xp`` in ``dtype``."""
    d = read_npz(path)
    return SRCNN.from_params(d["config"], d["params"], dtype=dtype, xp=xp)
