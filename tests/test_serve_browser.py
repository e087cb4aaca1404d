"""``tinysr serve``'s page in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

``tinysr serve --port 0`` runs as a real process; the browser opens its page, picks x3, uploads
an image, waits for the result, drags the before/after divider, zooms to 100% and pans, downloads
the result, and the downloaded bytes must equal the file ``tinysr upscale`` writes for the same
image. A dropped and a pasted image are enlarged too; a file that is not an image gets one
message on the page. Skips, saying why, where
Playwright's Python package or the chromium binary is absent (CI installs both: .ci/run).

``TINYSR_SERVE_SCREENSHOT=docs/serve.png`` also saves the page with its result as that file,
enlarging Set14's monarch (from ``TINYSR_SHARED``, Matlab-bicubic-downscaled by 3) in a larger window
instead of the synthetic image: that is how README's screenshot (docs/serve.png) is made.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_serve import PROG, _url, tinysr_program

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = os.environ.get("TINYSR_SERVE_SCREENSHOT")
# A PNG (base64) handed to the page as a user would: dropped on the drop zone, or pasted.
GIVE_FILE = """([b64, how]) => {
    const bytes = Uint8Array.from(atob(b64), ch => ch.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], how + ".png", { type: "image/png" }));
    const event = how === "dropped"
        ? new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true })
        : new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true });
    (how === "dropped" ? document.getElementById("drop") : document).dispatchEvent(event);
}"""

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright; "
                                                             "the test extra has it)")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip("no chromium browser here (Debian: apt-get install chromium; .ci/run installs it)",
                allow_module_level=True)


def _png_bytes(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _input_image(tmp_path) -> Path:
    path = tmp_path / ("monarch.png" if SCREENSHOT else "harbour.png")
    if SCREENSHOT:
        from tinysr.protocol.imresize import imresize  # noqa: PLC0415
        from tinysr.protocol.paths import data_dir  # noqa: PLC0415

        gt = data_dir("Set14") / "monarch.bmp"
        if not gt.exists():
            pytest.skip(f"{gt} is not here (TINYSR_SHARED)")
        small = imresize(np.asarray(Image.open(gt).convert("RGB")), 1 / 3)
        Image.fromarray(small).save(path)
        return path
    h, w = 150, 200
    yy, xx = np.mgrid[0:h, 0:w]
    rings = 127 + 120 * np.sin(np.hypot(yy - 60, xx - 90) / 4.0)
    arr = np.stack([rings, 255 * xx / w, 255 * yy / h], axis=2)
    arr[40:110:10] = 30  # thin stripes: edges SRCNN sharpens
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)
    return path


def test_the_page_enlarges_compares_and_downloads_what_the_command_writes(tmp_path):
    src = _input_image(tmp_path)
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image\n")
    out = tmp_path / "cmd"
    subprocess.run([*tinysr_program(), "upscale", str(src), "-s", "3", "-o", str(out), "-q"], check=True, timeout=120)
    want = (out / f"{src.stem}_srcnn_x3.png").read_bytes()
    window = {"width": 1000, "height": 900} if SCREENSHOT else {"width": 520, "height": 700}
    proc = subprocess.Popen([*tinysr_program(), "serve", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = _url(proc)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = browser.new_page(accept_downloads=True, viewport=window)
                errors = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(url)
                page.wait_for_selector("body[data-ready='1']", timeout=15000)
                assert page.locator("select[name=scale] option").all_inner_texts() == ["x1.5", "x2", "x2.5", "x3", "x3.5", "x4"]
                page.select_option("select[name=scale]", "3")
                page.set_input_files("#files", str(src))
                card = page.locator(".card").first
                page.wait_for_selector(".card[data-state='done']", timeout=45000)
                assert card.locator(".status").inner_text() == "done"

                # the slider: 100% shows image pixels one to one, and the view pans
                after = card.locator("img.after")
                w, h = after.evaluate("img => [img.naturalWidth, img.naturalHeight]")
                with Image.open(src) as im:
                    assert (w, h) == (im.width * 3, im.height * 3)
                assert card.locator("img.before").evaluate("img => getComputedStyle(img).imageRendering") == "pixelated"
                viewport = card.locator(".viewport")
                box = viewport.bounding_box()
                page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
                page.mouse.down()
                page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5, steps=5)
                page.mouse.up()
                stage = card.locator(".stage").bounding_box()
                value = float(card.locator(".slider").input_value())
                want_value = 100 * (box["x"] + box["width"] * 0.3 - stage["x"]) / stage["width"]
                assert abs(value - want_value) < 1.0 and value < 45
                clip = after.evaluate("img => img.style.clipPath")  # the after image shows right of the divider
                assert clip.startswith("inset(0px 0px 0px ") and float(clip[18:-2]) == pytest.approx(value, abs=0.1)
                card.locator("button.full").click()
                assert card.locator(".stage").evaluate("s => [s.offsetWidth, s.offsetHeight]") == [w, h]
                if not SCREENSHOT:  # the 600-pixel-wide result in a narrower view: dragging pans it
                    left0, room = viewport.evaluate("v => [v.scrollLeft, v.scrollWidth - v.clientWidth]")
                    assert room > 100 and 0 < left0 < room  # centred
                    box = viewport.bounding_box()
                    page.mouse.move(box["x"] + 200, box["y"] + 100)
                    page.mouse.down()
                    page.mouse.move(box["x"] + 160, box["y"] + 100, steps=4)
                    page.mouse.up()
                    assert viewport.evaluate("v => v.scrollLeft") == pytest.approx(left0 + 40, abs=2)
                card.locator("button.fit").click()
                card.locator(".slider").fill("50")
                card.locator(".slider").dispatch_event("input")

                with page.expect_download() as download:
                    card.locator("a.download").click()
                assert download.value.suggested_filename == f"{src.stem}_srcnn_x3.png"
                got = Path(download.value.path()).read_bytes()
                assert got == want  # byte for byte what tinysr upscale wrote

                page.screenshot(path=str(tmp_path / "page.png"))
                assert Image.open(tmp_path / "page.png").size == (window["width"], window["height"])
                if SCREENSHOT:
                    shutil.copyfile(tmp_path / "page.png", SCREENSHOT)

                # dropped and pasted files go the same way
                tiny = base64.b64encode(_png_bytes(np.full((6, 8, 3), (200, 40, 90), np.uint8))).decode()
                for how in ("dropped", "pasted"):
                    page.evaluate(GIVE_FILE, [tiny, how])
                page.locator(".card[data-state='done']").nth(2).wait_for(timeout=30000)
                names = page.locator(".card[data-state='done'] a.download").evaluate_all("as => as.map(a => a.download)")
                assert sorted(names) == ["dropped_srcnn_x3.png", f"{src.stem}_srcnn_x3.png", "pasted_srcnn_x3.png"]

                # a file that is not an image: one message on its card, nothing else
                page.set_input_files("#files", str(bad))
                page.wait_for_selector(".card[data-state='error']", timeout=15000)
                bad_card = page.locator(".card[data-state='error']")
                assert bad_card.locator(".error").inner_text() == \
                    "notes.png: not a readable image (not an image format Pillow knows)"
                assert bad_card.locator(".compare").is_hidden()
                assert page.locator(".card").count() == 4 and errors == []
            finally:
                browser.close()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert err == f"{PROG}: stopped\n"
