"""infer.py over every input pixel format and file type, tiny to small sizes, x2 and x3.

Each case writes a small image file, enlarges it through ``main`` with an identity 9-1-5 network
(receptive field 13, halo 6: real padding and tiling, but SRCNN == bicubic), and checks that the
output is exactly ``s`` times larger, has the mode the README promises (grayscale stays
grayscale, alpha is kept, 16-bit stays 16-bit, palette and CMYK become RGB(A), 1-bit becomes L),
and holds the Matlab-bicubic enlargement of the decoded input in that mode (within
``MAX_LEVELS``: the network runs in float32 and YCbCr round trips are float). ``test_infer.py``
covers the CLI's other behaviour (errors, overwrite, folders, compare).
"""

import numpy as np
import pytest
from PIL import Image

from tinysr.cli.upscale import main
from tinysr.nn.model import SRCNN
from tinysr.nn.serialization import save_model
from tinysr.protocol.imresize import imresize

MAX_LEVELS = 1  # output levels (of 255, or 65535 for 16-bit) between infer.py and the reference


@pytest.fixture(scope="module")
def identity_weights(tmp_path_factory):
    """9-1-5 with one channel per layer passing Y through: +1 before the ReLU, -1 after the last layer."""
    m = SRCNN(9, 1, 5, n1=1, n2=1)
    p = {k: np.zeros_like(v) for k, v in m.params.items()}
    p["conv1.weight"][0, 0, 4, 4] = 1.0
    p["conv1.bias"][0] = 1.0  # Y + 1 > 0, so the ReLUs pass bicubic overshoot below 0 unchanged
    p["conv2.weight"][0, 0, 0, 0] = 1.0
    p["conv3.weight"][0, 0, 2, 2] = 1.0
    p["conv3.bias"][0] = -1.0
    m.set_params(p)
    return str(save_model(tmp_path_factory.mktemp("w") / "identity.npz", m))


def _palette_image(rng, w, h):
    im = Image.fromarray(rng.integers(0, 16, (h, w), dtype=np.uint8), "P")
    im.putpalette(rng.integers(0, 256, 16 * 3, dtype=np.uint8).tolist())
    return im


def _u8(rng, w, h, c):
    return rng.integers(0, 256, (h, w, c), dtype=np.uint8)


# name -> (file suffix, make(rng, w, h) -> PIL image, save options, output mode)
CASES = {
    "L": (".png", lambda r, w, h: Image.fromarray(_u8(r, w, h, 1)[:, :, 0], "L"), {}, "L"),
    "LA": (".png", lambda r, w, h: Image.fromarray(_u8(r, w, h, 2), "LA"), {}, "LA"),
    "RGB": (".png", lambda r, w, h: Image.fromarray(_u8(r, w, h, 3), "RGB"), {}, "RGB"),
    "RGBA": (".png", lambda r, w, h: Image.fromarray(_u8(r, w, h, 4), "RGBA"), {}, "RGBA"),
    "P": (".png", _palette_image, {}, "RGB"),
    "P-transparency": (".png", _palette_image, {"transparency": 3}, "RGBA"),
    "CMYK-jpeg": (".jpg", lambda r, w, h: Image.fromarray(_u8(r, w, h, 4), "CMYK"), {"quality": 95}, "RGB"),
    "1-bit": (".png", lambda r, w, h: Image.fromarray(r.random((h, w)) < 0.5), {}, "L"),
    "16-bit-L": (".png", lambda r, w, h: Image.fromarray(r.integers(0, 65536, (h, w), dtype=np.uint16)), {}, "I;16"),
    "RGB-jpeg": (".jpg", lambda r, w, h: Image.fromarray(_u8(r, w, h, 3), "RGB"), {"quality": 95}, "RGB"),
    "L-jpeg": (".jpg", lambda r, w, h: Image.fromarray(_u8(r, w, h, 1)[:, :, 0], "L"), {}, "L"),
    "RGB-bmp": (".bmp", lambda r, w, h: Image.fromarray(_u8(r, w, h, 3), "RGB"), {}, "RGB"),
    "P-bmp": (".bmp", _palette_image, {}, "RGB"),
}

# (width, height): one pixel; 2x3; 4x5, whose enlargement (8x10, 12x15) is smaller than the
# 13x13 receptive field; 40x27 with --tile 16, cut into many tiles.
SIZES = {"1x1": ((1, 1), 0), "2x3": ((3, 2), 0), "4x5": ((5, 4), 0), "40x27-tiled": ((40, 27), 16)}


def _reference(path, out_mode, scale):
    """Matlab-bicubic enlargement of the decoded input, converted the documented way, as integers."""
    with Image.open(path) as im:
        if out_mode == "I;16":
            assert im.mode.startswith("I;16")
            a, full = np.asarray(im, dtype=np.uint16).astype(np.float64), 65535.0
        else:
            a, full = np.asarray(im.convert(out_mode), dtype=np.float64), 255.0
    up = np.clip(imresize(a / full, float(scale)), 0.0, 1.0) * full
    return np.where(up >= 0, np.floor(up + 0.5), np.ceil(up - 0.5)).astype(np.int64)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("case", CASES)
def test_mode_size_and_values(tmp_path, identity_weights, case, scale, size):
    suffix, make, options, out_mode = CASES[case]
    (w, h), tile = SIZES[size]
    src = tmp_path / f"in{suffix}"
    make(np.random.default_rng(w * h + scale), w, h).save(src, **options)

    assert main([str(src), "-o", str(tmp_path / "o"), "-s", str(scale), "--weights", identity_weights,
                 "--tile", str(tile)]) == 0
    with Image.open(tmp_path / "o" / f"in_srcnn_x{scale}.png") as out:
        out.load()
    assert out.size == (w * scale, h * scale)
    assert out.mode == out_mode
    got = np.asarray(out).astype(np.int64)
    ref = _reference(src, out_mode, scale)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= MAX_LEVELS
    if out_mode == "I;16" and w * h > 1:
        assert got.max() > 255  # real 16-bit values, not 8-bit ones widened
    if case == "P-transparency":
        with Image.open(src) as im:
            transparent = (np.asarray(im) == 3).any()
        assert transparent == (got[:, :, 3] < 255).any()  # the transparent index really becomes alpha
