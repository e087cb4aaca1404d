"""Frames per second of ``tinysr upscale clip.mp4 -s 2`` at 480p -> 960p (issue #28 item 1).

Encodes a 640x480 H.264 clip (the tests' clip, ``tests/test_video.py``: a moving pattern, 24 frames
at 24 fps, a sine-tone AAC track) with PyAV, then times, on this machine:

- ``video``: :func:`tinysr.upscale_video` of the clip at x2 (decode, each frame's Y through the
  images' enlarge, chroma bicubic, libx264 crf 18 preset medium, audio remuxed): frames / s;
- ``image path per frame``: :func:`tinysr.upscale` of each frame as an RGB image (what a script
  that exports frames and enlarges them as photos would do, without the decode and encode);
- ``decode + encode alone``: the same transcode with a plain bicubic in place of the network's
  share, to show what the codec costs (the Y plane Matlab-bicubic, no network).

    TINYSR_SHARED=/work/shared nice python -m bench.video_fps [--frames 24]   # from the repository root

Needs the ``[video]`` extra. Prints one Markdown table.

``--luma``: instead, what feeding the network BT.709 luma (what it sees in BT.709 video) changes
against the BT.601 luma it was trained on: the protocol at x2 (:func:`tinysr.protocol.evaluation.prepare_pair`,
:func:`~tinysr.protocol.evaluation.score`) on Set5 and Set14, the luma of each RGB image made with
either matrix (studio swing, rounded to uint8 as a decoder's plane is), bicubic and SRCNN x2.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import tinysr
import tinysr.image.enlarge as enlarge_module
from tests.test_video import make_clip  # the tests' clip: a moving pattern and a sine tone
from tinysr.image import video


def decoded_frames(path: Path) -> list[np.ndarray]:
    """The clip's frames as RGB arrays, as a script exporting frames would get them."""
    import av  # noqa: PLC0415

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


# Studio-swing luma weights on 0..255 (ITU-R BT.601 and BT.709): Y' = 16 + 219 * (Kr R + Kg G + Kb B)
LUMA = {"BT.601": (0.299, 0.587, 0.114), "BT.709": (0.2126, 0.7152, 0.0722)}


def luma_table(data: Path) -> None:
    """Mean protocol PSNR (dB) at x2 of bicubic and SRCNN x2 on each matrix's luma (see the module)."""
    from tinysr.image.inference import restore_y  # noqa: PLC0415
    from tinysr.protocol.evaluation import list_images, prepare_pair, score  # noqa: PLC0415
    from tinysr.weights import bundled_path, load_weights  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    model = load_weights(bundled_path(2))
    print("| luma | set | bicubic (dB) | SRCNN x2 (dB) | gain (dB) |")
    print("|---|---|---|---|---|")
    for name, (kr, kg, kb) in LUMA.items():
        for d in ("Set5", "Set14"):
            rows = []
            for path in list_images(data / d):
                rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
                y = np.clip(np.floor(16 + 219 * (kr * rgb[..., 0] + kg * rgb[..., 1] + kb * rgb[..., 2]) / 255 + 0.5),
                            0, 255).astype(np.uint8)
                gt, bic = prepare_pair(y, 2)
                rows.append((score(gt, bic, 2)[0], score(gt, restore_y(model, bic), 2)[0]))
            b, s = np.mean(rows, axis=0)
            print(f"| {name} | {d} | {b:.2f} | {s:.2f} | {s - b:+.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--luma", action="store_true", help="the luma-matrix comparison instead of the speed")
    ap.add_argument("--data", default=os.path.join(os.environ.get("TINYSR_SHARED", "/work/shared"), "data"))
    args = ap.parse_args()
    if args.luma:
        luma_table(Path(args.data))
        return
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "clip480.mp4"
        make_clip(src, w=640, h=480, frames=args.frames, subtitles=False, rotation=0, crf=18)
        rgbs = decoded_frames(src)
        tinysr.upscale(rgbs[0], 2)  # warm-up: weights loaded, numba compiled
        t = time.perf_counter()
        tinysr.upscale_video(src, Path(d) / "big.mp4", 2)
        video_s = time.perf_counter() - t
        t = time.perf_counter()
        for rgb in rgbs:
            tinysr.upscale(rgb, 2)
        image_s = time.perf_counter() - t
        from tinysr.weights import bundled_path, load_weights  # noqa: PLC0415

        model = load_weights(bundled_path(2))
        restore = enlarge_module.restore_piece
        enlarge_module.restore_piece = lambda m, y, dtype: np.asarray(y, dtype)  # the network's share removed
        try:
            t = time.perf_counter()
            video.upscale_video(src, Path(d) / "bicubic.mp4", model, 2)
            codec_s = time.perf_counter() - t
        finally:
            enlarge_module.restore_piece = restore
    n = args.frames
    print("| 640x480 -> 1280x960, x2 | frames / s | s per frame |")
    print("|---|---|---|")
    print(f"| video (`tinysr.upscale_video`, libx264 crf 18 medium) | {n / video_s:.2f} | {video_s / n:.3f} |")
    print(f"| image path per frame (`tinysr.upscale` of the RGB frame) | {n / image_s:.2f} | {image_s / n:.3f} |")
    print(f"| decode + bicubic + encode, no network | {n / codec_s:.2f} | {codec_s / n:.3f} |")


if __name__ == "__main__":
    main()
