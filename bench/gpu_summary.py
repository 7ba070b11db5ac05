"""The short table at the end of ``bench/gpu_check.sh``: every GPU benchmark against its CuPy peer.

    python bench/gpu_summary.py DIR       # reads DIR/info.json, gpu-fetch-*.json,
                                          # arrays-*.json and gpu-ml-*.json

One line per measurement: what, gpupart's median, the single-device reference's median (CuPy
on a GPU, NumPy in a ``--device cpu`` dry run) and their ratio (reference time / gpupart
time: above 1 means gpupart is faster; for the fetch, the bandwidth fraction of a local
device-to-device copy). A benchmark whose JSON is missing or failed is named as such.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _load(directory: Path, pattern: str) -> dict[str, Any] | None:
    found = sorted(directory.glob(pattern))
    if not found:
        return None
    try:
        return json.loads(found[-1].read_text())
    except (OSError, ValueError):
        return None


def _seconds(stats: dict[str, float] | None) -> str:
    return "-" if not stats else f"{stats['median']:.4g} s"


def header(directory: Path) -> str:
    """One line: the GPUs, driver, UCX and library versions the numbers were measured with."""
    info = _load(directory, "info.json") or {}
    gpus = info.get("gpus") or []
    names = sorted({g["name"] for g in gpus})
    device = f"{len(gpus)} x {', '.join(names)}" if gpus else "no GPU (CPU dry run)"
    ucx = info.get("ucx") or {}
    versions: dict[str, Any] = {}
    for pattern in ("gpu-fetch-*.json", "gpu-ml-*.json", "arrays-*.json"):
        report = _load(directory, pattern)
        if report:
            versions = report.get("versions", {})
            break
    cupy = versions.get("cupy-cuda13x") or versions.get("cupy-cuda12x") or "-"
    return (
        f"{device}; driver {info.get('driver_version') or '-'}; UCX {ucx.get('version') or '?'}"
        f" ({ucx.get('source') or '?'}); CuPy {cupy}; gpupart {versions.get('gpupart', '?')}"
        f" ({versions.get('gpupart_git') or '?'}); host {info.get('hostname', '?')}"
    )


def rows(directory: Path) -> list[tuple[str, str, str, str]]:
    """``(what, gpupart, reference, ratio)`` for every measurement found in ``directory``."""
    out: list[tuple[str, str, str, str]] = []
    fetch = _load(directory, "gpu-fetch-*.json")
    if fetch is None or "summary" not in fetch:
        out.append(("peer fetch (2 ranks, 1 device)", "missing or failed", "-", "-"))
    else:
        for row in fetch["summary"]:
            size = row["size"]
            label = f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
            out.append(
                (
                    f"peer fetch {label}",
                    f"{_seconds(row['fetch'])}, {row['fetch_gbps']:.1f} GB/s",
                    f"copy {_seconds(row['copy'])}, {row['copy_gbps']:.1f} GB/s",
                    f"{row['ratio']:.2f}",
                )
            )
        lanes = fetch.get("lanes")
        out.append(("peer fetch: UCX lanes", ", ".join(lanes) if lanes else "not known", "-", "-"))
    arrays = _load(directory, "arrays-*.json")
    if arrays is None or "summary" not in arrays:
        out.append(("DistArray operations", "missing or failed", "-", "-"))
    else:
        for row in arrays["summary"]:
            ratio = row.get("vs_numpy")
            out.append(
                (
                    f"DistArray {row['op']}",
                    _seconds(row.get("gpupart")),
                    _seconds(row.get("numpy")),
                    "-" if ratio is None else f"{ratio:.2f}x",
                )
            )
    ml = _load(directory, "gpu-ml-*.json")
    if ml is None or "summary" not in ml:
        out.append(("estimator fits", "missing or failed", "-", "-"))
    else:
        for row in ml["summary"]:
            ratio = row.get("speedup")
            diff = row.get("max_rel_diff")
            note = "" if diff is None else f" (rel. diff {diff:.0e})"
            out.append(
                (
                    f"{row['fit']}.fit{note}",
                    _seconds(row.get("gpupart")),
                    _seconds(row.get("direct")),
                    "-" if ratio is None else f"{ratio:.2f}x",
                )
            )
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python bench/gpu_summary.py DIR", file=sys.stderr)
        return 2
    directory = Path(args[0])
    print(header(directory))
    print()
    print("| what | gpupart | single-device reference | ratio |")
    print("|---|--:|--:|--:|")
    for what, ours, theirs, ratio in rows(directory):
        print(f"| {what} | {ours} | {theirs} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
