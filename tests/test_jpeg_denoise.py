"""--denoise: the command, the API and the evaluation pick the bundled model the input needs,
and the compression-aware weights beat the clean ones on compressed inputs."""

import io
import json

import numpy as np
import pytest
from PIL import Image

import tinysr
from tinysr.cli.evaluate import main as evaluate
from tinysr.cli.upscale import main as upscale_cli
from tinysr.image.jpeg_quality import LEVELS, denoise_weights
from tinysr.protocol.evaluation import evaluate_dir_jpeg
from tinysr.protocol.paths import data_dir
from tinysr.weights import BUNDLED_DIR

SCALES = (2, 3, 4)


def _photo(h=40, w=52):
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([120 + 80 * np.sin(xx / 6 + c) * np.cos(yy / 8) for c in range(3)], -1)
    img += np.random.default_rng(0).normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The same picture as a JPEG at q 90, 65 and 35, and as a PNG."""
    d = tmp_path_factory.mktemp("photos")
    for q in (90, 65, 35):
        Image.fromarray(_photo()).save(d / f"q{q}.jpg", quality=q)
    Image.fromarray(_photo()).save(d / "clean.png")
    return d


def test_every_level_ships_for_every_scale():
    for s in SCALES:
        assert denoise_weights(s, "none") == BUNDLED_DIR / f"x{s}.npz"
        for level in LEVELS[1:]:
            path = denoise_weights(s, level)
            assert path.is_file() and (BUNDLED_DIR / f"denoise-{level}_x{s}_log.jsonl").is_file()
    assert sorted(p.name for p in BUNDLED_DIR.glob("denoise-*.npz")) == sorted(
        f"denoise-{level}_x{s}.npz" for s in SCALES for level in LEVELS[1:])
    assert (BUNDLED_DIR / "denoise.md").is_file()


@pytest.mark.parametrize("name,level", [("q90.jpg", "low"), ("q65.jpg", "medium"), ("q35.jpg", "high"),
                                        ("clean.png", "none")])
def test_api_auto_picks_the_level_of_the_input(photos, name, level):
    path = photos / name
    auto = np.asarray(tinysr.upscale(path, 3))
    assert np.array_equal(auto, np.asarray(tinysr.upscale(path, 3, denoise=level)))
    other = "high" if level != "high" else "none"
    assert not np.array_equal(auto, np.asarray(tinysr.upscale(path, 3, denoise=other)))
    with Image.open(path) as im:  # an image opened from the file says the same
        assert np.array_equal(np.asarray(tinysr.upscale(im, 3)), auto)


def test_api_arrays_and_images_made_in_memory_use_the_clean_model(photos):
    with Image.open(photos / "q35.jpg") as im:
        arr = np.asarray(im.convert("RGB"))
    clean = tinysr.upscale(arr, 3, denoise="none")
    assert np.array_equal(tinysr.upscale(arr, 3), clean)
    assert np.array_equal(np.asarray(tinysr.upscale(Image.fromarray(arr), 3)), clean)
    assert not np.array_equal(tinysr.upscale(arr, 3, denoise="high"), clean)


def test_api_bad_denoise(photos):
    with pytest.raises(ValueError, match="denoise must be one of"):
        tinysr.upscale(photos / "q35.jpg", 3, denoise="strong")
    with pytest.raises(ValueError, match="cannot go with weights"):
        tinysr.upscale(photos / "q35.jpg", 3, weights=BUNDLED_DIR / "x3.npz", denoise="high")
    same = tinysr.upscale(photos / "q35.jpg", 3, weights=BUNDLED_DIR / "x3.npz")  # auto: the weights given
    assert np.array_equal(np.asarray(same), np.asarray(tinysr.upscale(photos / "q35.jpg", 3, denoise="none")))


def test_command_says_what_it_detected_and_used(photos, tmp_path, capsys):
    out = tmp_path / "out"
    files = [str(photos / n) for n in ("clean.png", "q35.jpg", "q65.jpg", "q90.jpg")]
    assert upscale_cli([*files, "-o", str(out), "-s", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(" clean.png (PNG: none)")
    assert lines[1].endswith(" q35.jpg (JPEG q~35: high)")
    assert lines[2].endswith(" q65.jpg (JPEG q~65: medium)")
    assert lines[3].endswith(" q90.jpg (JPEG q~90: low)")
    for name in ("q35", "q90"):  # the file the command wrote is the API's auto result
        assert np.array_equal(np.asarray(Image.open(out / f"{name}_srcnn_x3.png")),
                              np.asarray(tinysr.upscale(photos / f"{name}.jpg", 3)))
    assert upscale_cli([str(photos / "q35.jpg"), "-o", str(tmp_path / "n"), "-s", "3", "--denoise", "none"]) == 0
    assert capsys.readouterr().out.rstrip().endswith(" q35.jpg (JPEG q~35: none)")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "n" / "q35_srcnn_x3.png")),
                          np.asarray(tinysr.upscale(photos / "q35.jpg", 3, denoise="none")))


def _status(main, argv) -> int:
    """The exit status of ``main(argv)``, also when its argument parser exits (status 2)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_command_bad_denoise_is_one_line(photos, tmp_path, capsys):
    assert _status(upscale_cli, [str(photos / "q35.jpg"), "-o", str(tmp_path / "o"), "--denoise", "max"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--denoise" in err[0]
    assert upscale_cli([str(photos / "q35.jpg"), "-o", str(tmp_path / "o"), "--denoise", "high",
                        "--weights", str(BUNDLED_DIR / "x3.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot go with --weights" in err[0]
    assert not (tmp_path / "o").exists()


def test_evaluate_jpeg_scores_the_protocol(photos, tmp_path, capsys):
    folder = tmp_path / "gt"
    folder.mkdir()
    Image.fromarray(_photo(60, 75)).save(folder / "a.png")
    Image.fromarray(_photo(60, 75)[:, :, 1]).save(folder / "b.png")  # grayscale
    assert evaluate([str(folder), "--scale", "3", "--jpeg", "none", "40", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [(r["quality"], r["method"]) for r in res] == [
        (None, "bicubic"), (None, "clean"), (None, "tinysr auto"),
        (40, "bicubic"), (40, "clean"), (40, "tinysr auto")]
    by = {(r["quality"], r["method"]): r["mean"] for r in res}
    assert by[(None, "tinysr auto")] == by[(None, "clean")]  # a lossless input: the clean model
    assert by[(40, "tinysr auto")] != by[(40, "clean")]  # a q40 JPEG: the high level
    assert by[(40, "bicubic")]["psnr"] < by[(None, "bicubic")]["psnr"]  # compression costs
    assert abs(by[(40, "clean")]["gain"] - (by[(40, "clean")]["psnr"] - by[(40, "bicubic")]["psnr"])) < 1e-12
    for bad in (["--jpeg", "0"], ["--jpeg", "best"], ["--jpeg", "50", "--bicubic"]):
        assert _status(evaluate, [str(folder), *bad]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def _gains(folder, scale, quality) -> dict:
    """Mean gain over bicubic (dB) of the clean model and of auto, on ``folder`` under the JPEG protocol."""
    methods = {"bicubic": None,
               "clean": lambda im: np.asarray(tinysr.upscale(im, scale, denoise="none")),
               "auto": lambda im: np.asarray(tinysr.upscale(im, scale))}
    rows = evaluate_dir_jpeg(folder, scale, quality, methods)
    mean = {k: float(np.mean([r["psnr"] for r in v])) for k, v in rows.items()}
    return {k: mean[k] - mean["bicubic"] for k in ("clean", "auto")}


def test_bundled_compression_aware_weights_beat_the_clean_ones():
    """Set5, the JPEG protocol: on compressed inputs auto's model gains more over bicubic than the
    clean model (x3 at q 90, 75, 50, 30; x2 and x4 at q 50), and on a lossless input it is the clean model."""
    folder = data_dir("Set5")
    if not folder.is_dir():
        pytest.skip(f"shared data not found at {folder} (set TINYSR_SHARED)")
    clean = _gains(folder, 3, None)
    assert clean["auto"] == clean["clean"] and clean["clean"] > 1.5
    for scale, quality in ((3, 90), (3, 75), (3, 50), (3, 30), (2, 50), (4, 50)):
        g = _gains(folder, scale, quality)
        assert g["auto"] > g["clean"] + 0.2, f"x{scale} q{quality}: auto {g['auto']:+.2f} dB, clean {g['clean']:+.2f} dB"


def test_jpeg_bytes_in_memory_are_read_like_a_file(photos):
    data = (photos / "q65.jpg").read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        assert np.array_equal(np.asarray(tinysr.upscale(im, 3)), np.asarray(tinysr.upscale(photos / "q65.jpg", 3)))
