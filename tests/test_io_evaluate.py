"""tinysr evaluate and tinysr figures never replace an input, never score their own output, and
go on past an image the protocol cannot score (tinysr issue #23, items 4, 11, 12)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tinysr.cli import evaluate
from tinysr.cli import figures
from tinysr.nn.model import SRCNN
from tinysr.nn.serialization import save_model


def _rgb(path, size=(24, 18), seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _one_error(capsys, prog="tinysr evaluate") -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{prog}: error: "), err
    return err[0]


# -- item 4: --save-images into the evaluated folder -----------------------------------------------

def test_save_images_into_the_evaluated_folder_is_refused_even_with_overwrite(tmp_path, capsys):
    folder = tmp_path / "set"
    folder.mkdir()
    _rgb(folder / "a.png")
    victim = _rgb(folder / "a_x3_bicubic.png", seed=1)  # an input named as a saved image would be
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    os.symlink(folder, tmp_path / "alias")
    for target in (folder, tmp_path / "alias"):
        assert evaluate.main([str(folder), "--bicubic", "--save-images", str(target), "--overwrite"]) == 2
        assert "is the evaluated folder" in _one_error(capsys)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert victim.read_bytes() == before["a_x3_bicubic.png"]


def test_save_images_never_writes_through_a_link_onto_an_input(tmp_path, capsys):
    folder, out = tmp_path / "set", tmp_path / "saved"
    folder.mkdir()
    out.mkdir()
    src = _rgb(folder / "a.png")
    before = src.read_bytes()
    os.symlink(src, out / "a_x3_bicubic.png")
    assert evaluate.main([str(folder), "--bicubic", "--save-images", str(out), "--overwrite"]) == 2
    assert "is an evaluated image; not replaced" in _one_error(capsys)
    assert src.read_bytes() == before and (out / "a_x3_bicubic.png").is_symlink()


# -- item 12: one 16-bit image does not stop the table -------------------------------------------------

def test_a_16_bit_image_is_skipped_in_one_line_and_the_table_prints(tmp_path, capsys):
    folder = tmp_path / "set"
    folder.mkdir()
    _rgb(folder / "a.png")
    _rgb(folder / "c.png", seed=2)
    Image.fromarray(np.full((18, 24), 40000, dtype=np.uint16)).save(folder / "b16.png")
    assert evaluate.main([str(folder), "--bicubic", "--json"]) == 0
    out, err = capsys.readouterr()
    res = json.loads(out)
    assert [r["name"] for r in res["images"]] == ["a", "c"] and res["skipped"] == ["b16.png"]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "b16.png: 16-bit grayscale" in lines[0] and lines[0].startswith("tinysr evaluate: skipped")
    assert evaluate.main([str(folder), "--bicubic", "-q"]) == 0
    assert capsys.readouterr() == ("", "")


def test_a_folder_of_only_16_bit_images_is_one_error(tmp_path, capsys):
    folder = tmp_path / "set"
    folder.mkdir()
    Image.fromarray(np.full((18, 24), 40000, dtype=np.uint16)).save(folder / "b16.png")
    assert evaluate.main([str(folder), "--bicubic", "-q"]) == 2
    assert "none of its 1 images can be scored" in _one_error(capsys)


# -- item 12: the paper's table after README's first install (no scipy) --------------------------------

def _tiny_shared(tmp_path):
    shared = tmp_path / "shared"
    for name, n in (("Set5", 2), ("Set14", 1)):
        (shared / "data" / name).mkdir(parents=True)
        for k in range(n):
            _rgb(shared / "data" / name / f"i{k}.png", size=(36, 36), seed=k)
    mats = shared / "reference" / "srcnn_v1_models" / "9-1-5_91images"
    mats.mkdir(parents=True)
    for scale in (2, 3, 4):
        (mats / f"x{scale}.mat").write_bytes(b"MATLAB 5.0 MAT-file placeholder")  # never read without scipy
    return shared


def test_paper_table_without_scipy_leaves_out_the_authors_column_and_says_how_to_add_it(tmp_path):
    env = {**os.environ, "TINYSR_SHARED": str(_tiny_shared(tmp_path))}
    code = ("import sys; sys.modules['scipy'] = None  # as after `pip install -e .`: no scipy\n"
            "from tinysr.cli.evaluate import main; sys.exit(main([]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines() == [
        "tinysr evaluate: note: the authors' column is left out: reading Matlab .mat weights needs scipy: "
        "pip install 'tinysr[mat]'"]
    header = r.stdout.splitlines()[0]
    assert header == "| set | scale | bicubic | tinysr 9-1-5 |" and len(r.stdout.splitlines()) == 2 + 6


# -- item 4, 11: tinysr figures ------------------------------------------------------------------------

def test_figures_never_replace_their_input_even_with_overwrite(tmp_path, capsys):
    ck = save_model(tmp_path / "ck.npz", SRCNN(n1=8, n2=4, init="he"))
    before = ck.read_bytes()
    for extra in ([], ["--overwrite"]):
        assert figures.main(["filters", str(ck), str(ck), *extra]) == 2
        assert "is the input of this figure" in _one_error(capsys, "tinysr figures")
    assert ck.read_bytes() == before
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"epoch": 1, "psnr": 30.0}) + "\n")
    assert figures.main(["curve", str(log), str(log), "--overwrite"]) == 2
    assert "is the input" in _one_error(capsys, "tinysr figures")


def test_figures_keep_an_existing_out_unless_overwrite(tmp_path, capsys):
    ck = save_model(tmp_path / "ck.npz", SRCNN(n1=8, n2=4, init="he"))
    out = tmp_path / "f.png"
    out.write_bytes(b"my picture")
    assert figures.main(["filters", str(ck), str(out)]) == 2
    assert "exists (use --overwrite" in _one_error(capsys, "tinysr figures")
    assert out.read_bytes() == b"my picture"
    assert figures.main(["filters", str(ck), str(out), "--overwrite"]) == 0
    assert Image.open(out).mode == "L"


@pytest.mark.parametrize("box", [["0", "0", "4", "400"], ["-1", "0", "5", "5"], ["10", "10", "0", "5"],
                                 ["30", "0", "10", "10"]])
def test_figures_compare_box_outside_the_image_is_one_line(tmp_path, capsys, box):
    src = _rgb(tmp_path / "gt.png", size=(36, 36))
    out = tmp_path / "c.png"
    assert figures.main(["compare", str(src), str(out), "--box", *box]) == 2
    assert "is not inside the 36x36 image" in _one_error(capsys, "tinysr figures")
    assert not out.exists()
