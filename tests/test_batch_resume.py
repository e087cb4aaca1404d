"""Batches that resume (issue #28 item 4, #23 item 12): ``--skip-existing``, the summary line,
``-o`` naming an image format tinysr does not write."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from tinysr.cli.upscale import main
from tinysr.nn.model import SRCNN
from tinysr.nn.serialization import save_model

from .test_progress import written

SUMMARY = re.compile(r"infer\.py: (\d+) written, (\d+) skipped, (\d+) failed of (\d+) images? in \d+\.\d s")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return str(save_model(tmp_path_factory.mktemp("w") / "w.npz", SRCNN(n1=8, n2=4, init="he", seed=0)))


def _img(path, seed=1, size=(12, 9)):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _summary(err: str) -> tuple[int, int, int, int]:
    m = SUMMARY.fullmatch(err.strip().splitlines()[-1])
    assert m, err
    return tuple(int(g) for g in m.groups())


@pytest.fixture
def half_done(tmp_path, weights):
    """A folder of three images, of which one was enlarged by an earlier (interrupted) run."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i, n in enumerate("abc"):
        _img(folder / f"{n}.png", seed=i)
    out = tmp_path / "out"
    assert main([str(folder / "a.png"), "-o", str(out), "--weights", weights, "-q"]) == 0
    return folder, out


def test_rerun_without_skip_existing_fails_on_the_finished_file(half_done, weights, capsys):
    folder, out = half_done
    before = (out / "a_srcnn_x3.png").read_bytes()
    assert main([str(folder), "-o", str(out), "--weights", weights]) == 1
    text, err = capsys.readouterr()
    assert "a_srcnn_x3.png exists" in err and _summary(err) == (2, 0, 1, 3)
    assert (out / "a_srcnn_x3.png").read_bytes() == before


def test_skip_existing_resumes_counts_and_exits_0(half_done, weights, capsys):
    folder, out = half_done
    capsys.readouterr()
    stamp = (out / "a_srcnn_x3.png").stat().st_mtime_ns
    before = (out / "a_srcnn_x3.png").read_bytes()
    assert main([str(folder), "-o", str(out), "--weights", weights, "--skip-existing"]) == 0
    text, err = capsys.readouterr()
    assert [p for _, _, p in written(text)] == [str(out / "b_srcnn_x3.png"), str(out / "c_srcnn_x3.png")]
    assert _summary(err) == (2, 1, 0, 3) and len(err.splitlines()) == 1
    assert (out / "a_srcnn_x3.png").read_bytes() == before and (out / "a_srcnn_x3.png").stat().st_mtime_ns == stamp
    # a second re-run: everything is there
    assert main([str(folder), "-o", str(out), "--weights", weights, "--skip-existing"]) == 0
    text, err = capsys.readouterr()
    assert text == "" and _summary(err) == (0, 3, 0, 3)


def test_scheduler_path_counts_skips_and_ends_with_the_same_summary(half_done, weights, capfd):
    """--scheduler (a local Dask cluster of one worker) resumes the same way: the finished image is
    skipped and counted, the others written, one summary line, exit 0."""
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    folder, out = half_done
    capfd.readouterr()
    before = (out / "a_srcnn_x3.png").read_bytes()
    assert main([str(folder), "-o", str(out), "--weights", weights, "--skip-existing",
                 "--scheduler", "--workers", "1"]) == 0
    text, err = capfd.readouterr()  # the worker processes' stderr too: they write on this one
    assert sorted(text.split()) == [str(out / "b_srcnn_x3.png"), str(out / "c_srcnn_x3.png")]
    assert _summary(err) == (2, 1, 0, 3) and len(err.strip().splitlines()) == 1, err
    assert (out / "a_srcnn_x3.png").read_bytes() == before


def test_skip_existing_with_compare_writes_only_what_is_missing(half_done, weights, capsys):
    """Consistent with --compare: the existing enlargement is kept, the missing comparison written;
    once both are there the image is skipped."""
    folder, out = half_done
    capsys.readouterr()
    before = (out / "a_srcnn_x3.png").read_bytes()
    args = [str(folder / "a.png"), "-o", str(out), "--weights", weights, "--compare", "--skip-existing"]
    assert main(args) == 0
    text, err = capsys.readouterr()
    assert [p for _, _, p in written(text)] == [str(out / "a_compare_x3.png")]
    assert err == ""  # one named file, written: its line says it all (no summary)
    assert (out / "a_srcnn_x3.png").read_bytes() == before
    (out / "a_srcnn_x3.png").unlink()  # now only the comparison is there: the enlargement is written
    assert main(args) == 0
    text, err = capsys.readouterr()
    assert [p for _, _, p in written(text)] == [str(out / "a_srcnn_x3.png")]
    assert main(args) == 0
    text, err = capsys.readouterr()
    assert text == "" and _summary(err) == (0, 1, 0, 1) and len(err.splitlines()) == 1  # a skip is said


def test_quiet_prints_no_summary(half_done, weights, capsys):
    folder, out = half_done
    capsys.readouterr()
    assert main([str(folder), "-o", str(out), "--weights", weights, "--skip-existing", "-q"]) == 0
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("name", ["out.bmp", "out.gif", "OUT.BMP", "out.avi"])
def test_o_with_an_unwritten_image_suffix_is_refused_not_made_a_folder(tmp_path, weights, capsys, name):
    src = _img(tmp_path / "a.png")
    assert main([str(src), "-o", str(tmp_path / name), "--weights", weights]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"infer.py: error: -o {tmp_path / name}: tinysr writes")
    assert not (tmp_path / name).exists()


def test_an_existing_folder_with_such_a_suffix_is_still_a_folder(tmp_path, weights, capsys):
    src = _img(tmp_path / "a.png")
    (tmp_path / "out.bmp").mkdir()
    assert main([str(src), "-o", str(tmp_path / "out.bmp"), "--weights", weights]) == 0
    assert (tmp_path / "out.bmp" / "a_srcnn_x3.png").is_file()
