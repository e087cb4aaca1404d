"""The bundled weights reach the authors' 9-1-5 under the exact protocol, and the docs quote them.

Each case scores the bundled ``xS.npz`` and the authors' ``9-1-5_91images/xS.mat`` on the same
set in the same run and asserts tinysr >= authors; it also asserts that the numbers equal those
written in README.md and ``tinysr/weights/xS.md`` (``RECORDED``), so the docs stay true.
"""

from pathlib import Path

import numpy as np
import pytest

from tinysr.image.inference import restore_y
from tinysr.protocol.evaluation import evaluate_dir
from tinysr.protocol.paths import data_dir, reference_models_dir
from tinysr.weights import BUNDLED_DIR, load_weights

ROOT = Path(__file__).resolve().parent.parent

# (scale, set): (PSNR dB, SSIM) of the bundled weights, as README.md and tinysr/weights/xS.md quote them.
RECORDED = {
    (2, "Set5"): (36.5416, 0.9532),
    (2, "Set14"): (32.2970, 0.9050),
    (3, "Set5"): (32.5644, 0.9064),
    (3, "Set14"): (29.1148, 0.8167),
    (4, "Set5"): (30.2275, 0.8558),
    (4, "Set14"): (27.3132, 0.7449),
}


def _score(model, dataset: str, scale: int) -> tuple[float, float]:
    folder = data_dir(dataset)
    if not folder.exists():
        pytest.skip(f"shared data not found at {folder} (set TINYSR_SHARED)")
    rows = evaluate_dir(folder, scale, lambda y: restore_y(model, y))
    return float(np.mean([r["psnr"] for r in rows])), float(np.mean([r["ssim"] for r in rows]))


@pytest.mark.parametrize("scale,dataset", sorted(RECORDED))
def test_bundled_weights_reach_the_authors_and_match_the_docs(scale, dataset, tol_db=5e-4, tol_ssim=5e-4):
    mat = reference_models_dir() / "9-1-5_91images" / f"x{scale}.mat"
    if not mat.exists():
        pytest.skip(f"authors' weights not found at {mat} (set TINYSR_SHARED)")
    ours = _score(load_weights(BUNDLED_DIR / f"x{scale}.npz"), dataset, scale)
    authors = _score(load_weights(mat), dataset, scale)
    assert ours[0] >= authors[0], f"x{scale} {dataset}: tinysr {ours[0]:.4f} dB < authors {authors[0]:.4f} dB"
    psnr, ssim = RECORDED[(scale, dataset)]
    assert abs(ours[0] - psnr) <= tol_db and abs(ours[1] - ssim) <= tol_ssim


@pytest.mark.parametrize("scale", sorted({s for s, _ in RECORDED}))
def test_docs_quote_the_recorded_numbers(scale):
    md = (BUNDLED_DIR / f"x{scale}.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for dataset in ("Set5", "Set14"):
        psnr, ssim = RECORDED[(scale, dataset)]
        assert f"{psnr:.4f} / {ssim:.4f}" in md
        assert f"{psnr:.2f} / {ssim:.4f}" in readme


def test_every_shipped_weight_file_is_checked():
    shipped = sorted(int(p.stem[1:]) for p in BUNDLED_DIR.glob("x*.npz"))
    assert shipped == sorted({s for s, _ in RECORDED})
