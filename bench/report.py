"""Markdown tables for bench/RESULTS.md from a pytest-benchmark JSON file.

    python bench/report.py bench/results.json > bench/RESULTS.md
    python bench/report.py --placeholder > bench/RESULTS.md   # every row "not measured yet"
    python bench/report.py bench/results.json --missing "not measured: no GPU" > bench/RESULTS.md

Per benchmark group (one operation, every implementation): median time, GFLOP/s (the
benchmark's ``extra_info["flop"]`` / median), time relative to the torch entry on the same
device in the same group and run (``torch-cpu`` for CPU rows, ``torch-cuda`` for GPU rows: plain
float32; ``torch-cuda-tf32`` rows are compared against ``torch-cuda`` like any other),
host peak memory where recorded, and the warm-up (compile) time. Machine details come from the
JSON's ``machine_info`` and ``commit_info``. Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
NOT_MEASURED = "not measured yet"
YARDSTICKS = ("torch-cpu", "torch-cuda")  # plain float32 torch, the reference of "time / torch"
COLUMNS = ["implementation", "device", "median ms", "GFLOP/s", "time / torch", "peak MB", "warm-up s"]


def natural_key(text: str):
    """Sort ``srcnn-infer-512x512`` before ``srcnn-infer-1920x1080``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def group_rows(benchmarks: list[dict]) -> list[list[str]]:
    """Table rows of one group: CPU rows, then GPU rows, each fastest first."""
    torch_median = {}
    for b in benchmarks:
        info = b["extra_info"]
        if info.get("impl") in YARDSTICKS:  # torch-cuda-tf32 is a labelled row, never the reference
            torch_median[info.get("device")] = b["stats"]["median"]
    rows = []
    for b in sorted(benchmarks, key=lambda b: (b["extra_info"].get("device") != "cpu", b["stats"]["median"])):
        info, median = b["extra_info"], b["stats"]["median"]
        impl = info.get("impl", b["name"])
        device = info.get("device", "?")
        flop = info.get("flop")
        ref = torch_median.get(device)
        rows.append([impl, device, fmt(median * 1e3, ".3f"),
                     fmt(flop / median / 1e9 if flop else None, ".1f"),
                     fmt(median / ref if ref else None, ".2f"),
                     fmt(info.get("peak_mb"), ".1f"), fmt(info.get("compile_s"), ".3f")])
    return rows


def machine_section(data: dict) -> str:
    mi = data.get("machine_info", {})
    ours = mi.get("tinysr_bench", {})
    ci = data.get("commit_info", {})
    cpu = ours.get("cpu_model") or mi.get("cpu", {}).get("brand_raw") or mi.get("processor") or "?"
    commit = ci.get("id", "?")[:12] + (" (dirty)" if ci.get("dirty") else "")
    items = [
        ("CPU", f"{cpu}, {ours.get('logical_cpus', mi.get('cpu', {}).get('count', '?'))} logical CPUs"),
        ("CPU threads used", f"{ours.get('threads', '?')} (OpenBLAS, numba, torch; BLAS limit applied: "
                             f"{ours.get('blas_threads_applied', '?')})"),
        ("GPU", ours.get("gpu") or "none"),
        ("Python", f"{mi.get('python_implementation', '')} {mi.get('python_version', '?')}".strip()),
        ("numpy / BLAS", f"{ours.get('numpy', '?')} / {ours.get('blas') or '?'}"),
        ("BLAS kernels", ours.get("blas_kernels") or "?"),
        ("numba", ours.get("numba") or "?"),
        ("torch", ours.get("torch") or "not installed"),
        ("cupy", ours.get("cupy") or "not installed"),
        ("Date", data.get("datetime", "?")),
        ("Commit", f"{commit} on {ci.get('branch', '?')}"),
        ("pytest-benchmark", data.get("version", "?")),
    ]
    return "\n".join(["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in items])


def report(data: dict, missing: str | None = None) -> str:
    """The tables of ``data``; with ``missing``, every benchmark in bench/ that the JSON lacks
    (e.g. the GPU entries of a run without a GPU) gets a row whose cells say ``missing``."""
    groups: dict[str, list[dict]] = {}
    for b in data.get("benchmarks", []):
        groups.setdefault(b.get("group") or "ungrouped", []).append(b)
    quick = data.get("machine_info", {}).get("tinysr_bench", {}).get("quick") or any(
        b["extra_info"].get("quick") for bs in groups.values() for b in bs)
    out = ["# tinysr benchmarks", ""]
    if quick:
        out += ["> **Smoke run (`--bench-quick`): shrunken sizes, these timings mean nothing.**", ""]
    out += ["## Machine", "", machine_section(data), "", "## Results", "",
            "Median of the rounds; GFLOP/s = 2 x multiply-adds / median; time / torch = median over "
            "the median of the plain-float32 torch entry (torch-cpu, torch-cuda: TF32 off) on the same "
            "device in the same group (below 1: faster than torch; torch-cuda-tf32 allows TF32); peak MB = host memory one call allocates at its peak (tracemalloc, NumPy "
            "entries only); warm-up s = the first, untimed call (JIT, CuPy kernel compiles, cuDNN autotuning; "
            "tinysr's own NVRTC compiles come before it and are timed in the nvrtc-compile groups).", ""]
    absent: dict[str, list[list[str]]] = {}
    if missing:
        collected, device_of = collect_cases()
        for name, impls in collected.items():
            have = {b["extra_info"].get("impl", b["name"]) for b in groups.get(name, [])}
            absent[name] = [[i, device_of(i)] + [missing] * (len(COLUMNS) - 2) for i in impls if i not in have]
    for name in sorted(set(groups) | set(absent), key=natural_key):
        out += [f"### {name}", "", table(group_rows(groups.get(name, [])) + absent.get(name, [])), ""]
    return "\n".join(out)


def collect_cases():
    """``({group: [impl, ...]}, device_of)`` for every benchmark in bench/, collected, not run."""

    class Collector:
        def __init__(self):
            self.groups: dict[str, list[str]] = {}

        def pytest_collection_modifyitems(self, items):
            for item in items:
                marker = item.get_closest_marker("benchmark")
                group = marker.kwargs.get("group", "ungrouped") if marker else "ungrouped"
                impl = item.callspec.params.get("impl", item.name) if hasattr(item, "callspec") else item.name
                self.groups.setdefault(group, []).append(impl)
            from benchutil import device_of  # noqa: PLC0415  (importable now: conftest put bench/ on sys.path)

            self.device_of = device_of

    import pytest  # noqa: PLC0415  (only for --placeholder)

    collector = Collector()
    with contextlib.redirect_stdout(io.StringIO()):
        code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", str(BENCH_DIR)], plugins=[collector])
    if code != 0:
        raise SystemExit(f"collecting {BENCH_DIR} failed (pytest exit {code})")
    return collector.groups, collector.device_of


def placeholder() -> str:
    groups, device_of = collect_cases()
    out = ["# tinysr benchmarks", "", f"**{NOT_MEASURED.capitalize()}.** Regenerate this file on a quiet machine with "
           "the commands in `bench/README.md`; nothing below is a measurement.", "",
           "## Machine", "", "| | |", "|---|---|"]
    out += [f"| {k} | {NOT_MEASURED} |" for k in ("CPU", "CPU threads used", "GPU", "Python", "numpy / BLAS",
                                                  "numba", "torch", "cupy", "Date", "Commit")]
    out += ["", "## Results", ""]
    for name in sorted(groups, key=natural_key):
        impls = sorted(groups[name], key=lambda impl: device_of(impl) != "cpu")  # CPU rows first, as report()
        rows = [[impl, device_of(impl)] + [NOT_MEASURED] * (len(COLUMNS) - 2) for impl in impls]
        out += [f"### {name}", "", table(rows), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", nargs="?", help="pytest-benchmark JSON (--benchmark-json=...)")
    p.add_argument("--placeholder", action="store_true", help="tables of every benchmark, 'not measured yet'")
    p.add_argument("--missing", metavar="TEXT", help="add the benchmarks the JSON lacks, their cells saying TEXT")
    args = p.parse_args(argv)
    if args.placeholder:
        print(placeholder())
        return 0
    if not args.json:
        p.error("give the JSON file written by --benchmark-json, or --placeholder")
    data = json.loads(Path(args.json).read_text())
    if not data.get("benchmarks"):
        print(f"report.py: {args.json} holds no benchmarks (was --benchmark-disable used?)", file=sys.stderr)
        return 1
    print(report(data, args.missing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
