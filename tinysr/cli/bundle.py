"""``tinysr bundle SCALE RUN_DIR... --dest DIR``: ship a trained run as ``DIR/xS.npz``.

Takes the final epoch (``last.npz``, not the best Set5 epoch: no selection on the test set) of
the last training stage, writes it as a model-only ``.npz`` whose metadata holds every stage's
recipe, and concatenates the stages' ``log.jsonl`` into ``xS_log.jsonl`` (``epoch`` counts on
across stages; ``stage`` and ``stage_epoch`` say where each line came from).

Nothing is replaced unless asked: existing ``xS.npz``/``xS_log.jsonl`` in ``--dest`` need
``--overwrite``, and the package's own ``tinysr/weights`` (the weights every later upscale uses)
also needs ``--into-package``, after which ``xS.md`` there must be rewritten for the new weights.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tinysr.atomic import atomic_write
from tinysr.cli.common import OneLineParser
from tinysr.cli.failure import run_main
from tinysr.nn.serialization import load_model, read_npz, save_model
from tinysr.weights import BUNDLED_DIR

DESCRIPTION = ("Ship a trained run as DEST/xS.npz and DEST/xS_log.jsonl: the last stage's final epoch, "
               "with every stage's recipe and log.")


def _joined_log(stages: list[Path]) -> bytes:
    """The stages' ``log.jsonl`` as one log whose ``epoch`` counts on across stages."""
    lines, offset = [], 0
    for i, stage in enumerate(stages, 1):
        log = Path(stage) / "log.jsonl"
        try:
            rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{log}: not a training log ({exc})") from None
        if not rows or any(not isinstance(r, dict) or not isinstance(r.get("epoch"), int) for r in rows):
            raise ValueError(f"{log}: not a training log (need one JSON object with an integer epoch per line)")
        for r in rows:
            lines.append(json.dumps({**r, "epoch": r["epoch"] + offset, "stage": i, "stage_epoch": r["epoch"]}))
        offset += rows[-1]["epoch"]
    return "".join(x + "\n" for x in lines).encode()


def is_package_weights(dest) -> bool:
    """Whether ``dest`` is the package's own weights folder (:data:`tinysr.weights.BUNDLED_DIR`)."""
    dest = Path(dest)
    try:
        return dest.resolve() == BUNDLED_DIR or (dest.exists() and os.path.samefile(dest, BUNDLED_DIR))
    except OSError:
        return False


def bundle(scale: int, stages: list[Path], dest: Path, *, overwrite: bool = False,
           into_package: bool = False) -> Path:
    """Write ``dest/x{scale}.npz`` and ``dest/x{scale}_log.jsonl`` from the run folders ``stages``.

    Raises ``ValueError`` (nothing written) when ``dest`` is the package's weights folder without
    ``into_package``, or when either output exists without ``overwrite``. Everything is read and
    checked before anything is written; each file is written atomically.
    """
    dest = Path(dest)
    if is_package_weights(dest) and not into_package:
        raise ValueError(f"{dest} is the package's own weights folder, which every later upscale uses; "
                         "choose another --dest, or pass --into-package (then update its "
                         f"x{scale}.md to describe the new weights)")
    metas = [read_npz(Path(s) / "last.npz")["meta"] for s in stages]
    if any(m.get("scale") != scale for m in metas):
        raise ValueError(f"not every run in {[str(s) for s in stages]} trained scale {scale}")
    meta = {**metas[-1], "stages": [m.get("recipe") for m in metas]}
    model = load_model(Path(stages[-1]) / "last.npz")
    log = _joined_log(stages)
    out, log_path = dest / f"x{scale}.npz", dest / f"x{scale}_log.jsonl"
    if not overwrite:
        there = [str(p) for p in (out, log_path) if p.exists() or p.is_symlink()]
        if there:
            raise ValueError(f"{' and '.join(there)} already exist{'s' if len(there) == 1 else ''} "
                             "(use --overwrite to replace)")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        save_model(out, model, meta=meta, replace=overwrite)
    except FileExistsError:
        raise ValueError(f"{out} already exists (use --overwrite to replace)") from None
    try:
        atomic_write(log_path, lambda f: f.write(log), replace=overwrite)
    except FileExistsError:  # appeared since the check: keep the pair consistent
        out.unlink()
        raise ValueError(f"{log_path} already exists (use --overwrite to replace)") from None
    return out


def main(argv: list[str] | None = None, prog: str = "tinysr bundle") -> int:
    p = OneLineParser(prog=prog, description=DESCRIPTION)
    p.add_argument("scale", type=int, choices=(2, 3, 4))
    p.add_argument("runs", nargs="+", help="train.py --out folders, first stage first")
    p.add_argument("--dest", required=True, metavar="DIR", help="output folder for xS.npz and xS_log.jsonl")
    p.add_argument("--overwrite", action="store_true", help="replace xS.npz and xS_log.jsonl if they exist")
    p.add_argument("--into-package", action="store_true",
                   help="allow --dest to be the package's own tinysr/weights (then rewrite its xS.md)")
    args = p.parse_args(argv)

    def work() -> int:
        out = bundle(args.scale, [Path(r) for r in args.runs], Path(args.dest), overwrite=args.overwrite,
                     into_package=args.into_package)
        print(out)
        if is_package_weights(out.parent):
            print(f"{prog}: {out} now holds new weights: rewrite {out.with_name(f'x{args.scale}.md')} to describe "
                  "them", file=sys.stderr)
        return 0

    return run_main(prog, work)


if __name__ == "__main__":
    sys.exit(main())
