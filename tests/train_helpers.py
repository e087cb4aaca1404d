"""train.py command lines and log reading shared by the training tests."""

from __future__ import annotations

import json


def train_argv(train_folders, out, *extra, batch_size: int = 8) -> list[str]:
    """train.py arguments for the synthetic ``(train_dir, eval_dir)`` of the ``train_folders``
    fixture: Adam from He initialisation, constant learning rates, Set5-style evaluation every
    epoch, seed 3, writing to ``out``; ``extra`` appended (a flag there overrides these)."""
    train, ev = train_folders
    return ["--train-dir", str(train), "--eval-dir", str(ev), "--out", str(out), "--batch-size", str(batch_size),
            "--optimizer", "adam", "--init", "he", "--lr", "1e-3", "1e-3", "1e-4", "--schedule", "constant",
            "--eval-every", "1", "--seed", "3", *extra]


def logged_losses(out) -> list[float]:
    """The per-epoch losses of the run in folder ``out`` (its log.jsonl)."""
    return [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]
