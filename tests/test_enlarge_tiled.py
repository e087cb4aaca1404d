"""Tiled enlargement (tinysr.image.enlarge) equals the whole-image pipeline bit for bit, in bounded memory."""

import tracemalloc

import numpy as np
import pytest

from tinysr.image.enlarge import KINDS, enlarge, quantize
from tinysr.protocol.imresize import WindowedImresize, imresize
from tests.reference_pipeline import super_resolve
from tinysr.nn.model import SRCNN
from tests.threads import enlarge_on


def _pixels(kind, h, w, seed=0):
    channels, dtype, full = KINDS[kind]
    return np.random.default_rng(seed).integers(0, int(full) + 1, (h, w, channels)).astype(dtype)


def _whole_image_pipeline(pixels, kind, model, scale, tile):
    """Today's float pipeline (whole-image bicubic and colour planes) -> integer output."""
    sr, bic = super_resolve(pixels.astype(np.float64) / KINDS[kind][2], kind, model, scale, tile=tile)
    return quantize(sr, kind), quantize(bic, kind)


MODELS = {  # small random networks; shrink (the halo) 6 for 9-1-5, 8 for 9-5-5
    "9-1-5": SRCNN(9, 1, 5, n1=8, n2=4, init="he", seed=0),
    "9-5-5": SRCNN(9, 5, 5, n1=4, n2=3, init="he", seed=1),
}


@pytest.mark.parametrize("kind", ["RGB", "RGBA", "L", "LA", "L16"])
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("tile", [7, None])
def test_tiled_equals_whole_image_pipeline_bit_for_bit(kind, scale, tile, hw=(13, 9)):
    """Odd, non-square 13x9 input; tile 7 cuts the output into many tiles with partial ones at the edges."""
    px = _pixels(kind, *hw, seed=scale)
    for model in MODELS.values():
        sr, bic = enlarge(px, kind, model, scale, tile=tile, bicubic=True)
        ref_sr, ref_bic = _whole_image_pipeline(px, kind, model, scale, tile)
        assert sr.shape == (hw[0] * scale, hw[1] * scale, KINDS[kind][0]) and sr.dtype == px.dtype
        np.testing.assert_array_equal(sr, ref_sr)
        np.testing.assert_array_equal(bic, ref_bic)


@pytest.mark.parametrize("kind", ["RGB", "L"])
def test_tiled_network_within_one_level_of_untiled(kind, max_levels=1):
    """Tiles change only the float32 GEMM shapes: at most one output level from the one-piece network."""
    px = _pixels(kind, 17, 11, seed=5)
    model = MODELS["9-1-5"]
    sr, _ = enlarge(px, kind, model, 3, tile=7)
    whole, _ = _whole_image_pipeline(px, kind, model, 3, None)
    assert np.abs(sr.astype(np.int64) - whole.astype(np.int64)).max() <= max_levels


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_tiles_on_several_threads_give_the_same_pixels(arch):
    """Tiles enlarged 1, 2 or 3 at a time (each on its own thread, BLAS single-threaded): the same
    output and bicubic comparison, bit for bit, for the fused 9-1-5 path and layer-by-layer 9-5-5."""
    px = _pixels("RGBA", 23, 17, seed=9)
    model = MODELS[arch]
    one = enlarge_on(1, px, "RGBA", model, 3, tile=10, bicubic=True)
    for workers in (2, 3):
        sr, bic = enlarge_on(workers, px, "RGBA", model, 3, tile=10, bicubic=True)
        np.testing.assert_array_equal(sr, one[0])
        np.testing.assert_array_equal(bic, one[1])


def test_an_error_in_one_tile_reaches_the_caller_and_blas_is_restored(monkeypatch):
    from threadpoolctl import threadpool_limits

    from tinysr.image import enlarge as enlarge_module
    from tinysr.ops import blas_threads

    real, calls = enlarge_module.restore_piece, []

    def fail_on_the_third(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("tile failed")
        return real(*args)

    monkeypatch.setattr(enlarge_module, "restore_piece", fail_on_the_third)
    with threadpool_limits(2, user_api="blas"):
        with pytest.raises(RuntimeError, match="tile failed"):
            enlarge_on(2, _pixels("RGB", 20, 20), "RGB", MODELS["9-1-5"], 2, tile=8)
        assert max(blas_threads.blas_thread_counts()) == 2


def test_windowed_imresize_slices_equal_whole_imresize():
    img = np.random.default_rng(3).random((11, 8, 2))
    for scale in (2.0, 3.0, 4.0, (0.5, 2.5)):
        full = imresize(img, scale)
        wr = WindowedImresize(img.shape[:2], scale)
        assert wr.out_hw == full.shape[:2]
        oh, ow = full.shape[:2]
        for r0, r1, c0, c1 in [(0, 1, 0, 1), (2, oh - 1, 1, 4), (oh - 1, oh, ow - 3, ow), (0, oh, 0, ow)]:
            ir0, ir1, ic0, ic1 = wr.input_window(r0, r1, c0, c1)
            np.testing.assert_array_equal(wr.window(img[ir0:ir1, ic0:ic1], r0, r1, c0, c1), full[r0:r1, c0:c1])


def test_bad_arguments_are_refused():
    model = MODELS["9-1-5"]
    with pytest.raises(ValueError, match="RGB image must be"):
        enlarge(np.zeros((4, 4, 1), np.uint8), "RGB", model, 2)
    with pytest.raises(ValueError, match="L16 image must be"):
        enlarge(np.zeros((4, 4, 1), np.uint8), "L16", model, 2)
    with pytest.raises(ValueError, match="unknown image kind"):
        enlarge(np.zeros((4, 4, 3), np.uint8), "CMYK", model, 2)
    with pytest.raises(ValueError, match="scale"):
        enlarge(np.zeros((4, 4, 3), np.uint8), "RGB", model, 0)
    wr = WindowedImresize((4, 5), 2)
    with pytest.raises(ValueError, match="needs input rows"):
        wr.window(np.zeros((2, 2)), 0, 3, 0, 3)
    with pytest.raises(ValueError, match="outside"):
        wr.input_window(0, 9, 0, 3)


def test_peak_traced_memory_is_a_small_multiple_of_the_output(tile=64, max_ratio=3.0, old_min_ratio=20.0):
    """600x400 RGB at x2 with the full-size 9-1-5 network: output 1200x800x3 uint8 (2.9 MB).

    Peak traced memory (tracemalloc, which sees NumPy's buffers) of the tiled pipeline on one CPU
    thread is the output plus one tile's working set (about 2.5x the output at tile 64); on two
    threads, two tiles are in flight, so at most two working sets. The whole-image float pipeline
    needs far more (about 49x), which shows the bound is not vacuous.
    """
    model = SRCNN(init="he", seed=0)
    px = _pixels("RGB", 400, 600, seed=7)
    out_bytes = 1200 * 800 * 3

    peaks = {}
    for workers in (1, 2):
        tracemalloc.start()
        try:
            sr, _ = enlarge_on(workers, px, "RGB", model, 2, tile=tile)
            peaks[workers] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert sr.nbytes == out_bytes
    assert peaks[1] <= max_ratio * out_bytes, f"tiled peak {peaks[1] / out_bytes:.1f}x the output"
    one_tile = peaks[1] - out_bytes
    slack = 2**20  # the pool, its futures and the threads' frames
    assert peaks[2] <= out_bytes + 2 * one_tile + slack, f"two threads: {peaks[2] / out_bytes:.1f}x the output"

    tracemalloc.start()
    try:
        _whole_image_pipeline(px, "RGB", model, 2, tile)
        old_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert old_peak >= old_min_ratio * out_bytes, f"whole-image peak only {old_peak / out_bytes:.1f}x the output"


def test_auto_tile_asks_choose_tile_per_backend(monkeypatch):
    """``tile="auto"`` (the CLI's and the API's default) takes its size from
    ``inference.choose_tile`` (512 on the CPU; by free memory on the GPU), not a fixed number."""
    import tinysr.image.enlarge as enlarge_module
    from tinysr.image.enlarge import enlarge
    from tinysr.image.inference import AUTO, DEFAULT_TILE, choose_tile
    from tinysr.nn.model import SRCNN

    model = SRCNN(init="he", seed=3)
    assert choose_tile(model, 4000, 3000) == DEFAULT_TILE
    px = np.random.default_rng(0).integers(0, 256, (11, 9, 3), dtype=np.uint8)
    asked, counts = [], []
    monkeypatch.setattr(enlarge_module, "choose_tile", lambda m, h, w: asked.append((h, w)) or 7)
    sr, _ = enlarge(px, "RGB", model, 3, tile=AUTO, on_tile=lambda done, total: counts.append(total))
    assert asked == [(33, 27)] and counts[0] == 5 * 4  # 7-pixel tiles over 33 x 27
    np.testing.assert_array_equal(sr, enlarge(px, "RGB", model, 3, tile=None)[0])


def test_cli_tile_takes_auto_or_a_count():
    from tinysr.cli.common import tile_size

    assert tile_size("auto") == "auto" and tile_size("0") == 0 and tile_size("64") == 64
    with pytest.raises(Exception):
        tile_size("-1")
