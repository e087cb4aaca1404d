"""Tests for tinysr.protocol.matlab_weights (the authors' .mat weights) and the plain SRCNN.m reference."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tinysr.protocol.matlab_weights import load_mat_params
from tinysr.protocol.paths import reference_models_dir

try:  # tests/ as a package (rootdir on sys.path) or as a plain folder (pytest's rootdir-less mode)
    from tests.reference_srcnn import matlab_imfilter_same_replicate, srcnn_matlab_reference
except ImportError:
    from reference_srcnn import matlab_imfilter_same_replicate, srcnn_matlab_reference

RELEASED = [
    ("9-1-5_91images", "x2", 1),
    ("9-1-5_91images", "x3", 1),
    ("9-1-5_91images", "x4", 1),
    ("9-5-5_imagenet", "x2", 5),
    ("9-5-5_imagenet", "x3", 5),
    ("9-5-5_imagenet", "x4", 5),
    ("9-1-5_imagenet", "x3", 1),
    ("9-3-5_imagenet", "x3", 3),
]


def _released_file(folder: str, scale: str) -> Path:
    root = reference_models_dir()
    if not root.is_dir():
        pytest.skip(f"reference weights folder {root} is absent")
    return root / folder / f"{scale}.mat"


def _write_mat(path: Path, variables: dict[str, np.ndarray]) -> Path:
    import scipy.io

    scipy.io.savemat(str(path), variables)
    return path


def _zero_variables(f2: int = 1, f3: int = 5, n1: int = 64, n2: int = 32, f1: int = 9) -> dict:
    """All six variables in the released shapes, filled with zeros (float64)."""
    return {
        "weights_conv1": np.zeros((f1 * f1, n1)),
        "biases_conv1": np.zeros((n1, 1)),
        "weights_conv2": np.zeros((n1, f2 * f2, n2)),
        "biases_conv2": np.zeros((n2, 1)),
        "weights_conv3": np.zeros((n2, f3 * f3)),
        "biases_conv3": np.zeros((1, 1)),
    }


# ---------------------------------------------------------------------------------------------
# The released files


@pytest.mark.parametrize("folder,scale,f2", RELEASED)
def test_released_files_load_with_expected_shapes(folder, scale, f2):
    path = _released_file(folder, scale)
    config, params = load_mat_params(path)

    assert config == {"f1": 9, "f2": f2, "f3": 5, "n1": 64, "n2": 32}
    expected = {
        "conv1.weight": (64, 1, 9, 9),
        "conv1.bias": (64,),
        "conv2.weight": (32, 64, f2, f2),
        "conv2.bias": (32,),
        "conv3.weight": (1, 32, 5, 5),
        "conv3.bias": (1,),
    }
    assert {k: v.shape for k, v in params.items()} == expected
    for name, arr in params.items():
        assert arr.dtype == np.float64, name
        assert arr.flags.c_contiguous, name
        assert np.all(np.isfinite(arr)), name
        assert np.any(arr != 0), name


@pytest.mark.parametrize("folder,scale,f2", RELEASED)
def test_released_weights_keep_a_flat_image_flat(folder, scale, f2):
    """A trained SR net maps a constant image to (almost) the same constant.

    Insensitive to kernel orientation, but catches mixed-up channels, biases or scales.
    Measured: every released file gives 0.5 +- 0.0012.
    """
    _, params = load_mat_params(_released_file(folder, scale))
    out = srcnn_matlab_reference(np.full((10, 11), 0.5), params)
    assert out.shape == (10, 11)
    np.testing.assert_allclose(out, out[0, 0], rtol=0, atol=1e-12)  # replicate padding: flat
    assert abs(out[0, 0] - 0.5) < 5e-3


# ---------------------------------------------------------------------------------------------
# Orientation: synthetic files with one asymmetric tap per layer


def test_conv1_column_major_orientation(tmp_path):
    v = _zero_variables()
    k0, k5 = 11, 59  # Matlab linear indices (0-based) in filters 0 and 5
    v["weights_conv1"][k0, 0] = 1.0  # -> (row, col) = (11 % 9, 11 // 9) = (2, 1)
    v["weights_conv1"][k5, 5] = 2.0  # -> (59 % 9, 59 // 9) = (5, 6)
    _, p = load_mat_params(_write_mat(tmp_path / "c1.mat", v))

    w = p["conv1.weight"]
    assert w[0, 0, 2, 1] == 1.0 and w[0, 0, 1, 2] == 0.0  # not transposed
    assert w[5, 0, 5, 6] == 2.0 and w[5, 0, 6, 5] == 0.0
    assert np.count_nonzero(w) == 2


def test_conv2_column_major_orientation_f2_3(tmp_path):
    v = _zero_variables(f2=3)
    # weights_conv2[j, k, i]: input j = 3, linear index k = 5, output i = 7
    v["weights_conv2"][3, 5, 7] = 1.0  # -> conv2.weight[7, 3, 5 % 3, 5 // 3] = [7, 3, 2, 1]
    v["weights_conv2"][60, 1, 30] = 4.0  # -> [30, 60, 1, 0]
    config, p = load_mat_params(_write_mat(tmp_path / "c2.mat", v))

    assert config["f2"] == 3
    w = p["conv2.weight"]
    assert w.shape == (32, 64, 3, 3)
    assert w[7, 3, 2, 1] == 1.0 and w[7, 3, 1, 2] == 0.0 and w[3, 7, 2, 1] == 0.0
    assert w[30, 60, 1, 0] == 4.0 and w[30, 60, 0, 1] == 0.0
    assert np.count_nonzero(w) == 2


def test_conv2_two_dimensional_1x1(tmp_path):
    """A 1x1 layer may be stored 2-D (n1, n2): weights_conv2[j, i] -> conv2.weight[i, j, 0, 0]."""
    v = _zero_variables(f2=1)
    v["weights_conv2"] = np.zeros((64, 32))
    v["weights_conv2"][10, 20] = 3.0
    config, p = load_mat_params(_write_mat(tmp_path / "c2d.mat", v))

    assert config["f2"] == 1
    assert p["conv2.weight"].shape == (32, 64, 1, 1)
    assert p["conv2.weight"][20, 10, 0, 0] == 3.0
    assert np.count_nonzero(p["conv2.weight"]) == 1


def test_conv3_column_major_orientation_and_biases(tmp_path):
    v = _zero_variables()
    v["weights_conv3"][4, 7] = 1.0  # -> conv3.weight[0, 4, 7 % 5, 7 // 5] = [0, 4, 2, 1]
    v["biases_conv1"][:, 0] = np.arange(64)
    v["biases_conv2"][:, 0] = -np.arange(32)
    v["biases_conv3"][0, 0] = 0.25
    _, p = load_mat_params(_write_mat(tmp_path / "c3.mat", v))

    w = p["conv3.weight"]
    assert w[0, 4, 2, 1] == 1.0 and w[0, 4, 1, 2] == 0.0
    assert np.count_nonzero(w) == 1
    np.testing.assert_array_equal(p["conv1.bias"], np.arange(64))
    np.testing.assert_array_equal(p["conv2.bias"], -np.arange(32))
    np.testing.assert_array_equal(p["conv3.bias"], [0.25])


def test_synthetic_network_shifts_image_the_matlab_way(tmp_path):
    """End to end: a 1 at Matlab (row 2, col 4) of a 9x9 filter reads the pixel 2 rows up.

    imfilter correlates with the kernel centred at (4, 4), so the tap at (2, 4) gives
    out[r, c] = in[r - 2, c] (rows clamped at the top). Layers 2 and 3 pass channel 0 through.
    """
    v = _zero_variables(f2=1)
    v["weights_conv1"][2 + 4 * 9, 0] = 1.0  # Matlab reshape(., 9, 9)(3, 5) in 1-based terms
    v["weights_conv2"][0, 0, 0] = 1.0
    v["weights_conv3"][0, 2 + 2 * 5] = 1.0  # centre tap of the 5x5 filter
    _, p = load_mat_params(_write_mat(tmp_path / "shift.mat", v))

    rng = np.random.default_rng(0)
    y = rng.uniform(0.1, 1.0, size=(7, 8))  # positive, so the ReLUs pass it unchanged
    out = srcnn_matlab_reference(y, p)
    expected = y[np.clip(np.arange(7) - 2, 0, 6), :]
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-15)
    assert not np.allclose(out, y[:, np.clip(np.arange(8) - 2, 0, 7)])  # the transposed shift


# ---------------------------------------------------------------------------------------------
# The plain imfilter reference


IMG_3x4 = np.array(
    [
        [1.0, 2.0, 3.0, 4.0],
        [5.0, 6.0, 7.0, 8.0],
        [9.0, 10.0, 11.0, 12.0],
    ]
)
# Asymmetric kernel: out[r, c] = 1*I[r-1, c-1] + 2*I[r, c+1] + 3*I[r+1, c] (indices clamped)
KERNEL_3x3 = np.array(
    [
        [1.0, 0.0, 0.0],
        [0.0, 0.0, 2.0],
        [0.0, 3.0, 0.0],
    ]
)


def test_imfilter_hand_computed_values():
    out = matlab_imfilter_same_replicate(IMG_3x4, KERNEL_3x3)
    assert out.shape == (3, 4)
    # out[1, 1] = 1*I[0, 0] + 2*I[1, 2] + 3*I[2, 1] = 1 + 14 + 30 = 45
    assert out[1, 1] == 45.0
    # out[0, 0] = 1*I[0, 0] (clamped from [-1, -1]) + 2*I[0, 1] + 3*I[1, 0] = 1 + 4 + 15 = 20
    assert out[0, 0] == 20.0
    # out[2, 3] = 1*I[1, 2] + 2*I[2, 3] (clamped from [2, 4]) + 3*I[2, 3] (from [3, 3])
    #           = 7 + 24 + 36 = 67
    assert out[2, 3] == 67.0
    # A convolution (flipped kernel) would give 3*I[0, 1] + 2*I[1, 0] + 1*I[2, 2] = 27 at [1, 1].
    assert out[1, 1] != 27.0


def test_imfilter_replicate_border():
    # A single tap at the top-left of the kernel reads the up-left neighbour:
    # out[r, c] = I[max(r-1, 0), max(c-1, 0)], so row 0 and column 0 repeat the edge.
    k = np.zeros((3, 3))
    k[0, 0] = 1.0
    out = matlab_imfilter_same_replicate(IMG_3x4, k)
    expected = np.array(
        [
            [1.0, 1.0, 2.0, 3.0],
            [1.0, 1.0, 2.0, 3.0],
            [5.0, 5.0, 6.0, 7.0],
        ]
    )
    np.testing.assert_array_equal(out, expected)

    # Replicate padding keeps a constant image constant under a normalised kernel
    # (zero padding would darken the border).
    box = np.full((5, 5), 1.0 / 25.0)
    flat = matlab_imfilter_same_replicate(np.full((4, 6), 0.7), box)
    np.testing.assert_allclose(flat, 0.7, rtol=0, atol=1e-15)

    # A kernel larger than the image still works: every tap clamps into the image.
    big = np.zeros((9, 9))
    big[8, 8] = 1.0  # out[r, c] = I[min(r + 4, 2), min(c + 4, 3)] = I[2, 3]
    np.testing.assert_array_equal(matlab_imfilter_same_replicate(IMG_3x4, big), np.full((3, 4), 12.0))


@pytest.mark.parametrize("k", [1, 3, 5, 9])
def test_imfilter_matches_scipy_ndimage_nearest(k):
    """Independent check: scipy.ndimage.correlate with mode='nearest' is the same operation."""
    from scipy import ndimage

    rng = np.random.default_rng(k)
    img = rng.standard_normal((13, 17))
    kernel = rng.standard_normal((k, k))
    np.testing.assert_allclose(
        matlab_imfilter_same_replicate(img, kernel),
        ndimage.correlate(img, kernel, mode="nearest"),
        rtol=0,
        atol=1e-12,
    )


def test_imfilter_rejects_even_kernel():
    with pytest.raises(ValueError, match="odd"):
        matlab_imfilter_same_replicate(IMG_3x4, np.ones((2, 2)))


# ---------------------------------------------------------------------------------------------
# Bad files


def test_text_file_named_mat_is_rejected(tmp_path):
    path = tmp_path / "notes.mat"
    path.write_text("these are not weights\n" * 20)
    with pytest.raises(ValueError, match="notes.mat") as info:
        load_mat_params(path)
    assert "not a readable Matlab .mat file" in str(info.value)


def test_truncated_mat_is_rejected(tmp_path):
    good = _write_mat(tmp_path / "good.mat", _zero_variables())
    bad = tmp_path / "truncated.mat"
    bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ValueError, match="truncated.mat"):
        load_mat_params(bad)


def test_missing_variable_is_rejected(tmp_path):
    v = _zero_variables()
    del v["weights_conv2"]
    path = _write_mat(tmp_path / "no_conv2.mat", v)
    with pytest.raises(ValueError, match="no_conv2.mat") as info:
        load_mat_params(path)
    assert "weights_conv2" in str(info.value)
    assert "biases_conv2" not in str(info.value).split("(file has")[0]  # only the missing one


def test_nan_is_rejected(tmp_path):
    v = _zero_variables()
    v["weights_conv3"][3, 3] = np.nan
    path = _write_mat(tmp_path / "has_nan.mat", v)
    with pytest.raises(ValueError, match="has_nan.mat") as info:
        load_mat_params(path)
    assert "weights_conv3" in str(info.value)


@pytest.mark.parametrize(
    "name,shape,fragment",
    [
        ("weights_conv1", (80, 64), "not a square"),
        ("biases_conv1", (63, 1), "biases_conv1"),
        ("weights_conv2", (32, 1, 32), "weights_conv2"),  # n1 does not match conv1's 64
        ("weights_conv2", (64, 8, 32), "not a square"),
        ("biases_conv2", (64, 1), "biases_conv2"),
        ("weights_conv3", (64, 25), "weights_conv3"),  # n2 does not match conv2's 32
        ("biases_conv3", (2, 1), "biases_conv3"),
    ],
)
def test_inconsistent_shapes_are_rejected(tmp_path, name, shape, fragment):
    v = _zero_variables()
    v[name] = np.zeros(shape)
    path = _write_mat(tmp_path / "bad_shape.mat", v)
    with pytest.raises(ValueError, match=fragment) as info:
        load_mat_params(path)
    assert "bad_shape.mat" in str(info.value)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.mat"):
        load_mat_params(tmp_path / "absent.mat")


def test_missing_scipy_gives_install_hint(tmp_path, monkeypatch):
    # A None entry in sys.modules makes "import scipy.io" raise ImportError.
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(ImportError, match=r"pip install 'tinysr\[mat\]'"):
        load_mat_params(tmp_path / "whatever.mat")
