"""How far ``tinysr export --rgb`` is from ``tinysr.upscale``, in grey levels, on real images.

    python bench/onnx_rgb_parity.py [FOLDER ...]     (default: Set5 from TINYSR_SHARED)

For each scale 2, 3, 4 and each input type (float32 on [0, 1], uint8): every image of the folders,
as it is (RGB, uint8), through the exported graph in ONNX Runtime (CPU) and through
``tinysr.upscale``; prints the largest and the mean absolute difference over all pixels and
channels (float output times 255 against tinysr's uint8; uint8 against uint8) and the share of
uint8 values that differ. Also the plain ONNX ``Resize`` (clamped edges) against Matlab's
bicubic (tinysr.protocol.imresize), to show what the graph's mirrored edge fixes.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

import tinysr
from tinysr.cli.export_onnx import export_onnx
from tinysr.protocol.imresize import imresize
from tinysr.protocol.paths import data_dir
from tinysr.weights import bundled_path, load_weights


def main(folders: list[str]) -> None:
    files = sorted(p for f in (folders or [str(data_dir("Set5"))]) for p in Path(f).iterdir() if p.is_file())
    images = [np.asarray(Image.open(p).convert("RGB")) for p in files]
    print(f"{len(images)} images from {', '.join(sorted({p.parent.name for p in files}))}")
    print("| scale | input | max diff | mean diff | values differing |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for scale in (2, 3, 4):
            model = load_weights(bundled_path(scale))
            wants = [tinysr.upscale(im, scale).astype(np.float64) for im in images]
            for uint8 in (False, True):
                path = export_onnx(model, Path(tmp) / f"x{scale}_{uint8}.onnx", rgb_scale=scale, uint8=uint8)
                sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                diffs = []
                for im, want in zip(images, wants):
                    x = im.transpose(2, 0, 1)[None]
                    (out,) = sess.run(None, {"rgb": x if uint8 else (x / 255.0).astype(np.float32)})
                    got = out[0].transpose(1, 2, 0).astype(np.float64) * (1 if uint8 else 255.0)
                    diffs.append(np.abs(got - want).ravel())
                d = np.concatenate(diffs)
                share = f"{np.mean(d > 0) * 100:.4f} %" if uint8 else "-"
                print(f"| x{scale} | {'uint8' if uint8 else 'float32'} | {d.max():.4f} | {d.mean():.4f} | {share} |")
    # the plain Resize, no mirrored edge (the test's graph)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.test_export_onnx import plain_resize_model  # noqa: PLC0415

    print("\nplain ONNX Resize (cubic, a=-0.5, half_pixel, clamped edges) vs Matlab bicubic, grey levels:")
    for scale in (2, 3, 4):
        sess = ort.InferenceSession(plain_resize_model(scale).SerializeToString(), providers=["CPUExecutionProvider"])
        edge_max, inner_max = 0.0, 0.0
        e = scale // 2
        for im in images:
            x = (im.transpose(2, 0, 1)[None] / 255.0).astype(np.float32)
            (y,) = sess.run(None, {"x": x})
            diff = np.abs(y[0].transpose(1, 2, 0) * 255.0 - imresize(im / 255.0, scale) * 255.0)
            inner_max = max(inner_max, diff[e:-e, e:-e].max())
            mask = np.ones(diff.shape[:2], bool)
            mask[e:-e, e:-e] = False
            edge_max = max(edge_max, diff[mask].max())
        print(f"  x{scale}: outermost {e} output rows/columns: max {edge_max:.2f}; elsewhere: max {inner_max:.5f}")


if __name__ == "__main__":
    main(sys.argv[1:])
