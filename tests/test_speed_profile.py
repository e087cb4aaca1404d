"""The training step's profile (#25 item 3): Engine.profile times each part of the layers' work
without changing a number, and bench/train_passes.py prints the per-pass table from it."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from tinysr.nn.layers import MSELoss
from tinysr.nn.model import SRCNN
from tinysr.nn.optim import MomentumSGD
from tinysr.nn.training import train_step
from tinysr.ops.engine import Engine, PassProfile
from tinysr.ops.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]


def _steps(profile):
    rng = np.random.default_rng(16)
    x, t = rng.random((4, 1, 21, 21), dtype=np.float32), rng.random((4, 1, 9, 9), dtype=np.float32)
    model = SRCNN(n1=8, n2=4, init="he", seed=2, engine=Engine(2, workspace=Workspace()))
    model.engine.profile = profile
    opt = MomentumSGD(model.params, lr=1e-3)
    for _ in range(2):
        train_step(model, MSELoss(), opt, x, t)
    return model


def test_the_profile_times_every_part_and_changes_no_number():
    prof = PassProfile()
    timed, plain = _steps(prof), _steps(None)
    np.testing.assert_array_equal(timed.params.flat, plain.params.flat)
    parts = {(name, part) for (owner, part) in prof.seconds for name, layer in timed.named_layers() if layer is owner}
    assert {("conv1", "unfold"), ("conv1", "gemm"), ("conv1", "bias+relu"), ("conv1", "relu grad"),
            ("conv1", "gemm wgrad"), ("conv1", "reduce")} <= parts
    assert ("conv1", "gemm igrad") not in parts  # layer 1 computes no input gradient
    assert {("conv2", "gemm igrad"), ("conv3", "tap sum"), ("conv3", "tap spread"), ("conv3", "gemm igrad")} <= parts
    assert all(s > 0 for s in prof.seconds.values())
    prof.clear()
    assert not prof.seconds


def test_train_passes_prints_the_per_pass_table():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "train_passes.py"), "--arch", "9-1-5", "--batch", "2",
                          "--rounds", "1", "--steps", "2", "--no-torch", "--augment",
                          "--vs-algo", "conv3=im2col"], capture_output=True, text=True, check=True).stdout
    rows = {line.strip().split("  ")[0] for line in out.splitlines()}
    assert {"gather+augment", "conv1 forward", "conv1 unfold", "conv1 gemm wgrad", "conv2 gemm igrad",
            "conv3 tap spread", "conv1 backward", "loss", "optimiser", "step"} <= rows
    # 2 x multiply-adds per sample: layer 1 forward + weight gradient, layers 2 and 3 three passes each
    per_sample = 2 * (2 * 64 * 25 * 25 * 81 + 3 * 32 * 25 * 25 * 64 + 3 * 21 * 21 * 32 * 25)
    assert f"{2 * per_sample / 1e9:.3f} GFLOP per step" in out
    assert "of the 2048^3 sgemm's" in out and "tinysr with conv3=im2col:" in out
