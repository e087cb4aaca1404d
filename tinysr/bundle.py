"""``python -m tinysr.bundle SCALE RUN_DIR...``: make the bundled ``tinysr/weights/xS.npz``.

Takes the final epoch (``last.npz``, not the best Set5 epoch: no selection on the test set) of
the last training stage, writes it as a model-only ``.npz`` whose metadata holds every stage's
recipe, and concatenates the stages' ``log.jsonl`` into ``xS_log.jsonl`` (``epoch`` counts on
across stages; ``stage`` and ``stage_epoch`` say where each line came from). ``--dest`` picks
another folder than the package's ``tinysr/weights``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .atomic import atomic_write
from .cli import OneLineParser
from .serialization import load_model, read_npz, save_model
from .weights import BUNDLED_DIR


def bundle(scale: int, stages: list[Path], dest: Path = BUNDLED_DIR) -> Path:
    """Write ``dest/x{scale}.npz`` and ``dest/x{scale}_log.jsonl`` from the run folders ``stages``."""
    metas = [read_npz(Path(s) / "last.npz")["meta"] for s in stages]
    if any(m.get("scale") != scale for m in metas):
        raise ValueError(f"not every run in {[str(s) for s in stages]} trained scale {scale}")
    meta = {**metas[-1], "stages": [m.get("recipe") for m in metas]}
    Path(dest).mkdir(parents=True, exist_ok=True)
    out = save_model(Path(dest) / f"x{scale}.npz", load_model(Path(stages[-1]) / "last.npz"), meta=meta)
    lines, offset = [], 0
    for i, stage in enumerate(stages, 1):
        rows = [json.loads(line) for line in (Path(stage) / "log.jsonl").read_text().splitlines()]
        for r in rows:
            lines.append(json.dumps({**r, "epoch": r["epoch"] + offset, "stage": i, "stage_epoch": r["epoch"]}))
        offset += rows[-1]["epoch"]
    atomic_write(Path(dest) / f"x{scale}_log.jsonl", lambda f: f.write("".join(x + "\n" for x in lines).encode()))
    return out


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m tinysr.bundle", description=__doc__.split("\n\n")[0])
    p.add_argument("scale", type=int, choices=(2, 3, 4))
    p.add_argument("runs", nargs="+", help="train.py --out folders, first stage first")
    p.add_argument("--dest", default=str(BUNDLED_DIR), help="output folder (default: the package's weights)")
    args = p.parse_args(argv)
    try:
        out = bundle(args.scale, [Path(r) for r in args.runs], Path(args.dest))
    except (ValueError, OSError, KeyError) as exc:
        print(f"python -m tinysr.bundle: error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
