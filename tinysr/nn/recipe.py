"""The training recipe's schema: every setting of a training run, stated once.

Each :class:`Setting` says its value's type, its default (one per recipe, ``fast`` and
``paper``, or one for all), and its class, which says what ``--resume`` does with it:

- :data:`RUN` defines the run: recorded in every checkpoint; on resume taken from it, and a value
  given anew that differs is refused;
- :data:`CHANGEABLE`: recorded; on resume the value given anew, else the checkpoint's;
- :data:`RECORDED`: recorded for the record only (the folder, the recipe's name), never compared;
- :data:`NOT_RECORDED`: belongs to one invocation, never stored.

``tinysr train``'s flags (:mod:`tinysr.cli.train`) take their types, choices and defaults from
here, its resume checks (:func:`valid`) and checkpoint validation
(:mod:`tinysr.nn.serialization`, :func:`loadable`) too; a test checks that every flag has its
:class:`Setting`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tinysr.nn.model import INITS, LAYER_NAMES, parse_arch
from tinysr.nn.parallel import DEFAULT_TIMEOUT
from tinysr.ops.backend import BACKENDS
from tinysr.protocol.degrade import parse_degrade
from tinysr.protocol.paths import data_dir

RUN = "defines the run"
CHANGEABLE = "may change on resume"
RECORDED = "recorded, not compared"
NOT_RECORDED = "not recorded"
CLASSES = (RUN, CHANGEABLE, RECORDED, NOT_RECORDED)

DEFAULT_RECIPE = "fast"
RECIPE_NAMES = ("fast", "paper")
SCALES = (2, 3, 4)


@dataclass(frozen=True)
class Setting:
    """One setting of a run. ``type``: ``"int"``, ``"float"`` (finite), ``"str"``, ``"bool"``,
    ``"path"`` (a string) or ``"rates"`` (one finite number per layer, :data:`LAYER_NAMES`).
    ``default``: its value where no recipe sets it; ``recipes``: ``{recipe: value}`` where the
    recipes set it. ``nullable``: ``None`` is a value (the flag's help says what it means);
    ``least``: an integer's smallest value."""

    name: str
    cls: str
    type: str
    default: Any = None
    recipes: dict | None = None
    choices: tuple | None = None
    nullable: bool = False
    least: int | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def describe(self) -> str:
        """What a value must be, in words (for a message)."""
        if self.choices is not None:
            words = [str(c) for c in self.choices]
            text = words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"
        else:
            text = {"int": "an integer" + (f" >= {self.least}" if self.least is not None else ""),
                    "float": "a finite number", "str": "a string", "bool": "true or false", "path": "a path",
                    "rates": f"{len(LAYER_NAMES)} finite numbers (one per layer)"}[self.type]
        return text + (" or null" if self.nullable else "")


def _s(name, cls, type_, default=None, *, fast=None, paper=None, **more) -> Setting:
    recipes = None if fast is None else {"fast": fast, "paper": paper}
    return Setting(name, cls, type_, default, recipes, **more)


# The recipes' own settings first, in the order their help lists them.
SETTINGS: tuple[Setting, ...] = (
    _s("optimizer", RUN, "str", fast="adam", paper="sgd", choices=("sgd", "adam")),
    _s("init", RUN, "str", fast="he", paper="gaussian", choices=INITS),
    _s("lr", RUN, "rates", fast=[1e-3, 1e-3, 1e-3], paper=[1e-4, 1e-4, 1e-5]),
    _s("batch_size", RUN, "int", fast=16, paper=128),
    _s("schedule", RUN, "str", fast="cosine", paper="constant", choices=("constant", "cosine")),
    _s("epochs", CHANGEABLE, "int", fast=120, paper=100),
    _s("eval_every", CHANGEABLE, "int", fast=2, paper=1),
    _s("momentum", RUN, "float", fast=0.9, paper=0.9),
    _s("recipe", RECORDED, "str", DEFAULT_RECIPE, choices=RECIPE_NAMES, nullable=True),
    _s("backend", CHANGEABLE, "str", "numpy", choices=BACKENDS),
    _s("scale", RUN, "int", 3, choices=SCALES),
    _s("arch", RUN, "str", "9-1-5"),
    _s("augment", RUN, "bool", False),
    _s("init_from", RUN, "path", nullable=True),
    _s("seed", RUN, "int", 0, least=0),
    _s("train_dir", RUN, "path", nullable=True),
    _s("eval_dir", RUN, "path", nullable=True),
    _s("cache", CHANGEABLE, "path", nullable=True),
    _s("out", RECORDED, "path", nullable=True),
    _s("resume", NOT_RECORDED, "path", nullable=True),
    _s("overwrite", NOT_RECORDED, "bool", False),
    _s("loss_normalisation", RUN, "str", "caffe", choices=("caffe",)),
    _s("degrade", RUN, "str", nullable=True),
    _s("threads", CHANGEABLE, "int", nullable=True, least=1),
    _s("dist_timeout", CHANGEABLE, "float", DEFAULT_TIMEOUT),
    _s("distributed", RECORDED, "bool", False),
    _s("allow_changed_data", NOT_RECORDED, "bool", False),
    _s("quiet", NOT_RECORDED, "bool", False),
)
BY_NAME = {s.name: s for s in SETTINGS}

RECIPES = {r: {s.name: s.recipes[r] for s in SETTINGS if s.recipes} for r in RECIPE_NAMES}
DEFAULTS = {s.name: s.default for s in SETTINGS if not s.recipes}  # the settings no recipe sets
RUN_SETTINGS = tuple(s.name for s in SETTINGS if s.cls == RUN)
CHANGEABLE_SETTINGS = tuple(s.name for s in SETTINGS if s.cls == CHANGEABLE)
NOT_RECORDED_SETTINGS = tuple(s.name for s in SETTINGS if s.cls == NOT_RECORDED)
RECORDED_SETTINGS = tuple(s.name for s in SETTINGS if s.cls != NOT_RECORDED)  # what a checkpoint stores


def is_finite_number(v) -> bool:
    """A JSON number (not a bool) that is a finite float."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


def loadable(setting: Setting, value) -> bool:
    """Whether ``value`` (a checkpoint's JSON) has ``setting``'s type: what reading a checkpoint
    checks (:mod:`tinysr.nn.serialization`), so that ``--resume`` can use it."""
    if value is None:
        return setting.nullable
    kind = setting.type
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = is_finite_number(value)
    elif kind == "rates":
        return isinstance(value, list) and len(value) == len(LAYER_NAMES) and all(is_finite_number(x) for x in value)
    else:
        ok = isinstance(value, str)
    return ok and (setting.choices is None or value in setting.choices)


def valid(setting: Setting, value) -> bool:
    """Whether ``value`` is one ``setting``'s flag could have given (what ``--resume`` accepts)."""
    if value is None:
        return setting.nullable
    return loadable(setting, value) and (setting.least is None or value >= setting.least)


def per_layer(lr) -> list[float]:
    """``--lr``: one rate for every layer, or one per layer (:data:`LAYER_NAMES`), as the list of
    one per layer a run records."""
    rates = [lr] if isinstance(lr, (int, float)) else list(lr)
    if len(rates) not in (1, len(LAYER_NAMES)):
        raise ValueError(f"--lr takes one learning rate, or one per layer ({len(LAYER_NAMES)}); got {len(rates)}")
    return rates * len(LAYER_NAMES) if len(rates) == 1 else rates


# Settling a run's settings: the command line, the recipe, the defaults, and on resume the checkpoint.
# Messages name each setting's flag (Setting.flag).

PATHS = tuple(s.name for s in SETTINGS if s.type == "path" and s.cls != NOT_RECORDED)  # recorded absolute, resolved
_RUN_PATHS = tuple(name for name in PATHS if BY_NAME[name].cls == RUN)  # compared as the folders they resolve to


def _flag(key: str) -> str:
    return BY_NAME[key].flag


def _num(x: float) -> str:
    """``1e-3`` rather than ``0.001`` where that is exact (as the papers write learning rates)."""
    short = f"{x:.0e}".replace("e-0", "e-")
    return short if 0 < abs(x) < 0.01 and float(short) == x else f"{x:g}"



def show(value) -> str:
    """A setting's value as its flag takes it (``1e-4 1e-4 1e-5``)."""
    if isinstance(value, (list, tuple)):
        return " ".join(_num(float(x)) for x in value)
    if value is None:
        return "(default)"
    return str(value)


def _setting(key: str, value) -> str:
    """``value`` of ``key`` as its flag would give it."""
    if isinstance(value, bool):
        return _flag(key) if value else "--no-" + key.replace("_", "-")
    return f"{_flag(key)} {show(value)}"


_SHARED = {"train_dir": "T91", "eval_dir": "Set5"}  # the shared data a path defaults to


def effective_path(key: str, value) -> str | None:
    """The absolute path a path setting names (``None``: the shared data's T91/Set5 for the
    training/evaluation images, else ``None``)."""
    if value is None:
        return str(data_dir(_SHARED[key]).resolve()) if key in _SHARED else None
    return str(Path(value).expanduser().resolve())


def _same(key: str, a, b) -> bool:
    if key == "lr":
        try:
            return [float(x) for x in a] == [float(x) for x in b]
        except (TypeError, ValueError):
            return False
    if key in _RUN_PATHS:
        return effective_path(key, a) == effective_path(key, b)
    return a == b


def _check_recorded(stored: dict, checkpoint) -> None:
    """Refuse a checkpoint whose recorded recipe lacks a setting, holds one this version does not
    know, or holds a value no flag could have given: resuming it would change the run silently."""
    if not stored:
        raise ValueError(f"{checkpoint}: records no recipe (an older layout), so it cannot be continued as it "
                         f"was trained; start a new run from its weights with --init-from {checkpoint}")
    known = set(RECORDED_SETTINGS)
    missing = sorted((set(RUN_SETTINGS) | set(CHANGEABLE_SETTINGS)) - set(stored))
    unknown = sorted(set(stored) - known)
    if missing or unknown:
        what = "; ".join(part for part in (
            f"lacks {', '.join(map(_flag, missing))}" if missing else "",
            f"holds settings this version does not know: {', '.join(unknown)}" if unknown else "") if part)
        raise ValueError(f"{checkpoint}: its recorded recipe {what}; it cannot be continued exactly: start a new "
                         f"run from its weights with --init-from {checkpoint}")
    for key in (*RUN_SETTINGS, *CHANGEABLE_SETTINGS):
        if key in stored and not valid(BY_NAME[key], stored[key]):
            raise ValueError(f"{checkpoint}: its recorded recipe holds {key} = {stored[key]!r}, "
                             f"which {_flag(key)} cannot be")


def settle(args: dict, stored: dict | None = None, checkpoint=None) -> dict:
    """The run's settings from the command line's ``args`` (``{name: value}``, ``None``: not given).

    A new run (``stored`` is ``None``): the flags given, then the recipe's values, then the
    defaults. A resumed run: ``stored`` is the checkpoint's recipe (its ``meta["recipe"]``); the
    settings that define the run (:data:`RUN_SETTINGS`) are the checkpoint's, and any given
    that differs (a ``--recipe`` given counts as giving its values) raises ``ValueError`` naming
    ``checkpoint`` and each difference; :data:`CHANGEABLE_SETTINGS` ones are taken from the command line
    when given, else from the checkpoint.
    """
    given = {k: (per_layer(v) if k == "lr" else v) for k, v in args.items() if v is not None}
    if stored is None:
        recipe = given.get("recipe", DEFAULT_RECIPE)
        values = {**DEFAULTS, **RECIPES[recipe], **given, "recipe": recipe}
        # recorded absolute: a resume from another folder (or with another TINYSR_SHARED) trains on the same data
        values.update({k: effective_path(k, values[k]) for k in PATHS if values[k] is not None or k in _SHARED})
        return values
    _check_recorded(stored, checkpoint)
    asked = {**RECIPES[given["recipe"]], **given} if "recipe" in given else given
    name = stored.get("recipe") if stored.get("recipe") in RECIPES else DEFAULT_RECIPE
    base = {**DEFAULTS, **RECIPES[name]}
    values = {**base, **given, "recipe": stored.get("recipe")}
    differences = []
    for key in RUN_SETTINGS:  # every one is recorded (_check_recorded)
        if key in asked and not _same(key, asked[key], stored[key]):
            differences.append(f"{_setting(key, asked[key])} (it has {_setting(key, stored[key])})")
        values[key] = stored[key]
    if differences:
        raise ValueError(f"{checkpoint}: --resume continues that run as it was trained, but the command line "
                         f"asks for {', '.join(differences)}; drop those flags, or train a new run "
                         f"into another --out")
    for key in CHANGEABLE_SETTINGS:
        values[key] = given.get(key, stored.get(key, base[key]))
    if given.get("cache") is not None:
        values["cache"] = effective_path("cache", given["cache"])
    return values


def check(values: dict) -> None:
    """Refuse (``ValueError`` naming the flag) settings no run can have: an architecture that
    leaves no label of a 33x33 training patch, counts below 1, rates or momentum out of range."""
    args = SimpleNamespace(**values)
    try:
        kernels = parse_arch(args.arch)
    except ValueError as exc:
        raise ValueError(f"--arch: {exc}") from None
    if sum(k - 1 for k in kernels) >= 33:  # the valid convolutions must leave a label of a 33x33 patch
        raise ValueError(f"--arch {args.arch}: its kernels take {sum(k - 1 for k in kernels)} pixels off each "
                         f"33-pixel training patch side, leaving no label (at most 32 in total, e.g. 9-1-5)")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.eval_every < 0:
        raise ValueError("--eval-every must be >= 0")
    if any(not math.isfinite(v) or v <= 0 for v in args.lr):
        raise ValueError("--lr values must be positive and finite")
    if not (math.isfinite(args.momentum) and 0 <= args.momentum < 1):
        raise ValueError(f"--momentum must be in [0, 1), got {args.momentum}")
    if not (math.isfinite(args.dist_timeout) and args.dist_timeout > 0):
        raise ValueError(f"--dist-timeout must be a positive number of seconds, got {args.dist_timeout}")
    if args.degrade is not None:
        parse_degrade(args.degrade)  # ValueError naming --degrade
