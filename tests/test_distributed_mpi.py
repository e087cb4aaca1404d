"""train.py --distributed: MPI data parallelism with 2 ranks on this machine, launched with mpiexec.

Needs mpi4py and an MPI launcher (the ``mpi`` extra: mpi4py + the mpich wheel, whose
``mpiexec`` sits beside the Python executable); skips naming what is missing otherwise.
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="the mpi extra (mpi4py, mpich) is not installed")

import tinysr  # noqa: E402
from tinysr.cli.train import main as train_main  # noqa: E402
from tinysr.distributed.mpi import SOLO, shard_indices  # noqa: E402
from tinysr.nn.serialization import read_npz  # noqa: E402

from .train_helpers import logged_losses, train_argv  # noqa: E402

LAUNCH_TIMEOUT = 120  # seconds; a hang fails the test instead of the CI run


def _mpiexec() -> str:
    here = Path(sys.executable).parent / "mpiexec"  # the mpich wheel's launcher, in the same bin/
    found = str(here) if here.is_file() else shutil.which("mpiexec")
    if not found:
        pytest.skip("no mpiexec: pip install 'tinysr[mpi]' (the mpich wheel ships one)")
    return found


def _env(**extra) -> dict:
    env = dict(os.environ, **extra)
    root = str(Path(tinysr.__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = "1"  # two ranks on two cores: one thread each
    return env


def _launch(*programs: list[str], timeout: float = LAUNCH_TIMEOUT, env: dict | None = None,
            ) -> tuple[subprocess.CompletedProcess, float]:
    """``mpiexec -n 1 PROG0 : -n 1 PROG1 ...`` (one rank per program); returns the result and seconds.

    ``env``: extra environment variables for the ranks."""
    cmd = [_mpiexec()]
    for i, prog in enumerate(programs):
        cmd += ([":"] if i else []) + ["-n", "1", *prog]
    t0 = time.monotonic()
    # Own session, so that on a time-out the launcher, its proxies and every rank are ended together.
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(**(env or {})), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"mpiexec did not finish in {timeout} s: {' '.join(cmd)}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), time.monotonic() - t0


TRAIN = [sys.executable, "-m", "tinysr.cli.train"]

# Three steps of the real training step (tinysr.nn.training.train_step) in float64 on random patches.
STEPS_SCRIPT = '''
import sys
import numpy as np
from tinysr.nn.training import train_step
from tinysr.distributed.mpi import shard_indices
from tinysr.nn.layers import MSELoss
from tinysr.nn.model import SRCNN
from tinysr.nn.optim import MomentumSGD


def run(dist, batch=128, steps=3):
    rng = np.random.default_rng(5)
    x = rng.random((steps * batch + 7, 1, 33, 33))
    t = x[:, :, 6:-6, 6:-6] + 0.1 * rng.standard_normal((len(x), 1, 21, 21))
    model = SRCNN(init="he", seed=1, dtype=np.float64)
    opt = MomentumSGD(model.params, lr={"conv1": 3e-5, "conv2": 3e-5, "conv3": 3e-6}, momentum=0.9)
    loss_fn = MSELoss()
    perm = rng.permutation(len(x))
    losses = []
    for s in range(steps):
        idx = shard_indices(perm, s, batch, dist.rank, dist.size)
        losses.append(dist.mean(float(train_step(model, loss_fn, opt, x[idx], t[idx], dist))))
    return {k: np.asarray(v) for k, v in model.params.items()}, losses


if __name__ == "__main__":
    from tinysr.distributed.mpi import init_mpi
    dist = init_mpi(timeout=60, prog="steps")
    params, losses = run(dist)
    np.savez(f"{sys.argv[1]}/rank{dist.rank}.npz", losses=np.array(losses), node_rank=dist._node_rank(), **params)
'''


def test_shard_indices_split_each_global_batch():
    perm = np.random.default_rng(0).permutation(40)
    parts = [shard_indices(perm, 2, 8, r, 4) for r in range(4)]
    assert all(len(p) == 2 and np.all(np.diff(p) > 0) for p in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.sort(perm[16:24]))
    np.testing.assert_array_equal(shard_indices(perm, 2, 8), np.sort(perm[16:24]))  # one process


def test_two_ranks_of_64_take_the_steps_of_one_process_of_128_float64(tmp_path):
    """Gradients averaged over 2 ranks (batch 64 each) equal the gradient of the global batch of 128."""
    script = tmp_path / "steps.py"
    script.write_text(STEPS_SCRIPT)
    res, _ = _launch([sys.executable, str(script), str(tmp_path)], [sys.executable, str(script), str(tmp_path)])
    assert res.returncode == 0, res.stderr[-2000:]
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert (int(r0["node_rank"]), int(r1["node_rank"])) == (0, 1)  # both on this host (picks GPUs 0, 1)
    ref_params, ref_losses = runpy.run_path(str(script), run_name="reference")["run"](SOLO)
    from tinysr.nn.model import SRCNN

    init = SRCNN(init="he", seed=1, dtype=np.float64).params
    for name, ref in ref_params.items():
        np.testing.assert_array_equal(r0[name], r1[name])  # the ranks stay identical
        assert np.abs(ref - init[name]).max() > 1e-4  # the steps did move the weights
        # Same steps; only the order of float64 sums differs (rank partial sums + allreduce):
        # measured differences are last-bit, <= 6e-17 on weights of size ~0.6.
        np.testing.assert_allclose(r0[name], ref, rtol=0, atol=1e-14)
    np.testing.assert_allclose(r0["losses"], ref_losses, rtol=1e-12)


def _args(train_folders, out, *extra):
    return train_argv(train_folders, out, *extra, batch_size=16)


_losses = logged_losses


def test_train_py_two_ranks_matches_one_process_and_resumes(train_folders, tmp_path, capsys):
    one, two, part = tmp_path / "one", tmp_path / "two", tmp_path / "part"
    assert train_main(_args(train_folders, one, "--epochs", "2")) == 0
    capsys.readouterr()
    dist = [*TRAIN, "--distributed", "--dist-timeout", "60"]
    res, _ = _launch(dist + _args(train_folders, two, "--epochs", "2"), dist + _args(train_folders, two, "--epochs", "2"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("epoch 2/2") == 1  # rank 0 alone prints
    assert "distributed: 2 ranks, global batch 16 (8 per rank), gradients averaged by MPI on host" in res.stdout
    assert sorted(p.name for p in two.iterdir()) == ["best.npz", "last.npz", "log.jsonl"]
    a, b = read_npz(one / "last.npz"), read_npz(two / "last.npz")
    for k in a["params"]:  # float32: the same steps up to rounding of the sums
        np.testing.assert_allclose(b["params"][k], a["params"][k], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_losses(two), _losses(one), rtol=1e-5)
    log = [json.loads(line) for line in (two / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and all(np.isfinite(r["psnr"]) for r in log)

    # Resume: 1 epoch, then --resume auto to 2, over 2 ranks, equals the uninterrupted 2-rank run.
    res, _ = _launch(dist + _args(train_folders, part, "--epochs", "1"), dist + _args(train_folders, part, "--epochs", "1"))
    assert res.returncode == 0, res.stderr[-2000:]
    more = _args(train_folders, part, "--epochs", "2", "--resume", "auto")
    res, _ = _launch(dist + more, dist + more)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resumed from" in res.stdout
    c = read_npz(part / "last.npz")
    for k in b["params"]:
        np.testing.assert_array_equal(c["params"][k], b["params"][k])
    assert _losses(part) == _losses(two)


def test_augment_draws_the_same_symmetry_on_every_rank(train_folders, tmp_path, capsys):
    """--augment under --distributed: both ranks flip/rotate their halves of a global batch alike,
    so 2 ranks still take the one-process steps (a rank drawing its own symmetry would not)."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert train_main(_args(train_folders, one, "--epochs", "2", "--augment", "--eval-every", "0")) == 0
    capsys.readouterr()
    dist = [*TRAIN, "--distributed", "--dist-timeout", "60"]
    argv = dist + _args(train_folders, two, "--epochs", "2", "--augment", "--eval-every", "0")
    res, _ = _launch(argv, argv)
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = read_npz(one / "last.npz"), read_npz(two / "last.npz")
    for k in a["params"]:
        np.testing.assert_allclose(b["params"][k], a["params"][k], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_losses(two), _losses(one), rtol=1e-5)


# Makes ``import cupy`` in a rank give the CPU emulator (tests/cupy_emulator.py); Python imports a
# sitecustomize module found on sys.path at start-up.
EMULATOR_SITE = """
import sys
sys.path.insert(0, {root!r})
from tests import cupy_emulator
sys.modules["cupy"] = cupy_emulator
"""


@pytest.mark.emulated
@pytest.mark.parametrize("cuda_aware,transport", [
    ("0", "MPI on host buffers (device -> host -> device copies)"),
    ("1", "CUDA-aware MPI on device buffers"),
], ids=["host-staging", "cuda-aware"])
def test_train_py_two_ranks_on_the_gpu_path(train_folders, tmp_path, capsys, cuda_aware, transport):
    """--backend cupy over 2 ranks, each on the CPU emulator of CUDA: the device-side packing,
    the transport chosen and the allreduce give the one-process NumPy run's steps.

    With the emulator a "device" buffer is host memory, so the CUDA-aware path hands MPI the
    emulated array itself; on a GPU it hands over device memory. NCCL is not emulated."""
    from tests.cupy_emulator import unavailable_reason  # noqa: PLC0415

    if unavailable_reason():
        pytest.skip(unavailable_reason())
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(EMULATOR_SITE.format(root=str(Path(tinysr.__file__).resolve().parents[1])))
    one, two = tmp_path / "one", tmp_path / "two"
    assert train_main(_args(train_folders, one, "--epochs", "2", "--augment")) == 0
    capsys.readouterr()
    argv = [*TRAIN, "--distributed", "--dist-timeout", "60"] + _args(train_folders, two, "--epochs", "2",
                                                                      "--augment", "--backend", "cupy")
    env = {"PYTHONPATH": str(site) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TINYSR_MPI_CUDA_AWARE": cuda_aware}
    res, _ = _launch(argv, argv, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"gradients averaged by {transport}" in res.stdout
    a, b = read_npz(one / "last.npz"), read_npz(two / "last.npz")
    for k in a["params"]:
        np.testing.assert_allclose(b["params"][k], a["params"][k], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_losses(two), _losses(one), rtol=1e-5)


def test_error_in_one_rank_ends_the_job_with_its_message(train_folders, tmp_path):
    dist = [*TRAIN, "--distributed", "--dist-timeout", "60"]
    bad = _args(train_folders, tmp_path / "r", "--epochs", "1", "--train-dir", str(tmp_path / "nope"))  # rank 1 only
    res, _ = _launch(dist + _args(train_folders, tmp_path / "r", "--epochs", "1"), dist + bad)
    assert res.returncode == 2, res.stderr[-2000:]
    line = next(x for x in res.stderr.splitlines() if x.startswith("train.py: error:"))
    assert "rank 1 of 2:" in line and "nope" in line


@pytest.mark.parametrize("death", ["hangs", "killed"])
def test_rank_that_dies_ends_the_job_instead_of_hanging(train_folders, tmp_path, death):
    """Rank 1 gets through set-up (MPI start, the patch-cache barrier), then stops (SIGSTOP: a hung
    rank or frozen node) or is killed (SIGKILL).

    Hangs: rank 0's next collective times out after --dist-timeout 3 s; it prints one line and
    aborts the job. Killed: mpiexec notices and ends the job. Either way: non-zero, not a hang
    (about 4 s here when the machine is idle; _launch fails the test after LAUNCH_TIMEOUT).
    """
    sig = "SIGSTOP" if death == "hangs" else "SIGKILL"
    script = tmp_path / "dying.py"  # a file: mpiexec does not pass arguments with newlines intact
    # Ibarrier: it matches rank 0's non-blocking barrier (a blocking Barrier would not, by the MPI standard).
    script.write_text("import os, signal\nfrom mpi4py import MPI\nMPI.COMM_WORLD.Ibarrier().Wait()\n"
                      f"os.kill(os.getpid(), signal.{sig})\n")
    dist = [*TRAIN, "--distributed", "--dist-timeout", "3"]
    res, _ = _launch(dist + _args(train_folders, tmp_path / "d", "--epochs", "1"), [sys.executable, str(script)])
    assert res.returncode != 0
    if death == "hangs":
        lines = [x for x in res.stderr.splitlines() if x.startswith("train.py: error:")]
        assert len(lines) == 1 and "no reply from the other ranks within 3 s" in lines[0], res.stderr[-2000:]
