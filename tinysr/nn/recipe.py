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
from typing import Any

from tinysr.nn.model import INITS, LAYER_NAMES
from tinysr.nn.parallel import DEFAULT_TIMEOUT
from tinysr.ops.backend import BACKENDS

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
