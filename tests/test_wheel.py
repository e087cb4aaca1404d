"""The wheel ships the CUDA sources as tinysr/kernels/*.cu and the weights package, and once
installed its ``tinysr`` console script and Python API work away from the checkout.

Builds with the installed setuptools (``pip wheel --no-deps --no-build-isolation``, no network)
from a copy of the project's packaging inputs in ``tmp_path``, so the checkout gets no
``build/`` or ``*.egg-info`` folders. Skips only when that build backend is unavailable.
The install goes into a fresh virtual environment (``pip install --no-deps --no-index``) that
sees the test environment's packages (NumPy, Pillow, numba...) but not the checkout.
"""

import importlib.util
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOP_LEVEL_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in", "README.md", "LICENSE")
EXPECTED = ["tinysr/kernels/direct.cu", "tinysr/kernels/elementwise.cu", "tinysr/kernels/col2im.cu", "tinysr/kernels/fused.cu",
            "tinysr/kernels/__init__.py", "tinysr/weights/__init__.py", "tinysr/ops/cuda_kernels.py",
            # every subpackage (pyproject.toml lists them one by one) and the command's entry point
            *(f"tinysr/{sub}/__init__.py" for sub in ("nn", "ops", "protocol", "image", "cli", "distributed")),
            "tinysr/cli/command.py"]


def _backend_missing():
    """Why setuptools cannot build a wheel offline here, or None when it can."""
    if importlib.util.find_spec("setuptools") is None:
        return "setuptools is not installed"
    import setuptools  # noqa: PLC0415

    major = int(setuptools.__version__.split(".")[0])
    if major < 77:
        return f"setuptools {setuptools.__version__} is older than the >=77 pyproject.toml requires (SPDX license)"
    has_bdist_wheel = (importlib.util.find_spec("setuptools.command.bdist_wheel") is not None
                       or importlib.util.find_spec("wheel") is not None)
    if not has_bdist_wheel:
        return "neither setuptools' bdist_wheel (setuptools>=70.1) nor the 'wheel' package is installed"
    return None


@pytest.fixture(scope="module")
def wheel_path(tmp_path_factory):
    reason = _backend_missing()
    if reason:
        pytest.skip(f"cannot build a wheel offline: {reason}")
    src = tmp_path_factory.mktemp("src")
    for name in TOP_LEVEL_FILES:
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("tinysr", "kernels"):
        shutil.copytree(REPO / folder, src / folder, ignore=ignore)
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", str(out), "."],
        cwd=src, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, f"pip wheel failed:\n{proc.stdout}\n{proc.stderr}"
    wheels = list(out.glob("tinysr-*.whl"))
    assert len(wheels) == 1, f"expected one tinysr wheel in {out}, found {wheels}"
    return wheels[0]


def test_wheel_contains_kernels_and_weights_package(wheel_path):
    names = set(zipfile.ZipFile(wheel_path).namelist())
    missing = [n for n in EXPECTED if n not in names]
    assert not missing, f"{wheel_path.name} lacks {missing}"
    assert not any(n.startswith("kernels/") for n in names), "the .cu files must ship under tinysr/kernels/"


def test_installed_wheel_finds_its_kernel_sources(wheel_path, tmp_path):
    """Unpacked (as pip installs it), tinysr.ops.cuda_kernels reads the .cu files from the package."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel_path).extractall(site)
    code = ("import tinysr.ops.cuda_kernels as k, sys; "
            "print(k.kernel_dir()); [k.kernel_source(n) for n in k.KERNEL_FILES]; "
            "assert 'cupy' not in sys.modules")
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == site / "tinysr" / "kernels"


@pytest.fixture(scope="module")
def installed(wheel_path, tmp_path_factory):
    """A fresh venv with the wheel installed: its ``bin`` folder and the wheel's version."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, capture_output=True, timeout=120)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(bindir / "python"), "install", "--no-deps", "--no-index",
         "-q", str(wheel_path)], capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, f"pip install failed:\n{proc.stdout}\n{proc.stderr}"
    # --system-site-packages reaches the base interpreter's packages; when the tests run in a venv,
    # its site-packages (after the new venv's own, so the wheel's tinysr comes first) too.
    purelib = subprocess.run([bindir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    Path(purelib, "_test_env_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    version = wheel_path.name.split("-")[1]
    return bindir, version


def _run_installed(args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_installed_console_script_upscales(installed, tmp_path):
    """``tinysr`` from the wheel, run outside the checkout: --version, then upscale a tiny image."""
    from PIL import Image  # noqa: PLC0415

    import tinysr  # noqa: PLC0415

    bindir, version = installed
    assert version == tinysr.__version__
    proc = _run_installed([bindir / "tinysr", "--version"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"tinysr {version}\n"
    Image.new("RGB", (5, 4), (200, 30, 90)).save(tmp_path / "tiny.png")
    proc = _run_installed([bindir / "tinysr", "upscale", "tiny.png", "-o", "out", "-s", "2"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "out" / "tiny_srcnn_x2.png") as im:
        assert im.size == (10, 8) and im.mode == "RGB"


def test_installed_python_api_upscales(installed, tmp_path):
    """``import tinysr`` in the venv is the installed copy, bundled weights included."""
    bindir, _ = installed
    code = ("import sys, tinysr, numpy as np; from pathlib import Path; "
            "here = Path(tinysr.__file__).resolve(); assert Path(sys.prefix).resolve() in here.parents, here; "
            "out = tinysr.upscale(np.full((4, 5), 120, np.uint8), 3); "
            "assert out.shape == (12, 15) and out.dtype == np.uint8, (out.shape, out.dtype); "
            "assert abs(int(out.mean()) - 120) <= 2, out.mean(); print('ok')")
    proc = _run_installed([bindir / "python", "-c", code], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok\n"
