"""The training recipe's schema (tinysr.nn.recipe): every ``tinysr train`` flag is a setting
there, with its class; the command line, the resume checks and the checkpoint checks follow it."""

from __future__ import annotations

import argparse

import pytest

import tinysr.cli.train as train_module
from tinysr.cli.train import build_parser, main, settle
from tinysr.nn.model import LAYER_NAMES
from tinysr.nn.recipe import (BY_NAME, CHANGEABLE_SETTINGS, CLASSES, DEFAULTS, NOT_RECORDED, RECIPES, RUN, RUN_SETTINGS, SETTINGS, loadable,
                              per_layer, valid)
from tinysr.nn.serialization import read_npz

from .train_helpers import train_argv


def _flags() -> dict[str, argparse.Action]:
    return {a.dest: a for a in build_parser()._actions if a.dest != "help"}


def test_every_train_flag_is_classified_in_the_schema():
    flags = _flags()
    assert len(flags) >= 25
    assert sorted(flags) == sorted(BY_NAME), "a flag without a Setting, or a Setting without a flag"
    assert all(s.cls in CLASSES for s in SETTINGS)
    for name, action in flags.items():
        assert BY_NAME[name].flag in action.option_strings  # --batch-size is batch_size
        assert action.default in (None, False)  # not given: None (settle fills it in); store_true: False


def test_every_setting_has_a_value_on_a_new_run():
    """Each setting is given by every recipe or by DEFAULTS (a setting with neither would be an
    AttributeError on a run without its flag)."""
    for recipe in RECIPES.values():
        assert set(recipe) | set(DEFAULTS) == set(BY_NAME) and not set(recipe) & set(DEFAULTS)
    args = settle(build_parser().parse_args([]))
    assert set(vars(args)) == set(BY_NAME)
    assert args.lr == RECIPES["fast"]["lr"] and args.scale == DEFAULTS["scale"]


def test_the_flags_take_types_and_choices_from_the_schema(capsys):
    parser = build_parser()
    for name, action in _flags().items():
        s = BY_NAME[name]
        if s.choices is not None:
            assert tuple(action.choices) == tuple(s.choices), name
    for argv in (["--scale", "5"], ["--optimizer", "rmsprop"], ["--seed", "-1"], ["--threads", "0"],
                 ["--epochs", "x"], ["--lr"]):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(argv)
        assert exc.value.code == 2
        assert len(capsys.readouterr().err.splitlines()) == 1


@pytest.mark.parametrize("name", [s.name for s in SETTINGS if s.cls != NOT_RECORDED])
def test_a_recorded_setting_is_checked_by_its_type(name):
    s = BY_NAME[name]
    good = RECIPES["fast"][name] if name in RECIPES["fast"] else DEFAULTS[name]
    if good is None:
        good = {"int": 2, "path": "/x", "str": "jpeg:30-95"}[s.type]  # str: --degrade, the one nullable string
    assert loadable(s, good) and valid(s, good)
    wrong = {"bool": "yes", "int": "2", "float": "0.9", "str": 3, "path": 3, "rates": [1e-3]}[s.type]
    assert not loadable(s, wrong) and not valid(s, wrong)
    assert loadable(s, None) == s.nullable


def test_lr_takes_one_rate_or_one_per_layer():
    assert per_layer(1e-3) == per_layer([1e-3]) == [1e-3] * len(LAYER_NAMES)
    assert per_layer([1e-4, 1e-4, 1e-5]) == [1e-4, 1e-4, 1e-5]
    with pytest.raises(ValueError, match="one per layer"):
        per_layer([1e-3, 1e-3])
    assert settle(build_parser().parse_args(["--lr", "2e-4"])).lr == [2e-4] * len(LAYER_NAMES)


def test_one_lr_trains_as_the_same_rate_given_per_layer(train_folders, tmp_path, capsys):
    """``--lr 1e-3`` is ``--lr 1e-3 1e-3 1e-3``: the same weights, the same recorded recipe (so a
    resume may spell it either way), and a wrong count is one line, status 2."""
    one, three = tmp_path / "one", tmp_path / "three"
    base = [a for a in train_argv(train_folders, one, "--epochs", "1", "--eval-every", "0")]
    lr = base.index("--lr")
    assert main(base[:lr + 1] + ["1e-3"] + base[lr + 4:]) == 0
    assert main(train_argv(train_folders, three, "--epochs", "1", "--eval-every", "0", "--lr", "1e-3", "1e-3",
                           "1e-3")) == 0
    a, b = read_npz(one / "last.npz"), read_npz(three / "last.npz")
    assert all((a["params"][k] == b["params"][k]).all() for k in a["params"])
    assert a["meta"]["recipe"]["lr"] == b["meta"]["recipe"]["lr"] == [1e-3, 1e-3, 1e-3]
    assert main(["--resume", "auto", "--out", str(one), "--epochs", "2", "--lr", "1e-3"]) == 0
    capsys.readouterr()
    assert main(train_argv(train_folders, tmp_path / "two", "--lr", "1e-3", "1e-3")) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"{train_module.PROG}: error: --lr takes one learning rate, or one per layer "
                                         "(3); got 2"]
    assert captured.out == "" and not (tmp_path / "two").exists()  # refused before any work


def test_the_run_settings_are_the_ones_a_resume_refuses_to_change():
    assert set(RUN_SETTINGS) == {s.name for s in SETTINGS if s.cls == RUN}
    assert {"lr", "arch", "seed", "train_dir"} <= set(RUN_SETTINGS)
    assert {"epochs", "backend", "threads"} <= set(CHANGEABLE_SETTINGS)
