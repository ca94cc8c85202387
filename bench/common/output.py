"""How a benchmark reports: progress lines on stderr, markdown rows, the report and its JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path


def log(benchmark: str, message: str) -> None:
    """`[bench.engine] message` on stderr (stdout carries the report)."""
    print(f"[{benchmark}] {message}", file=sys.stderr, flush=True)


def table_row(cells: Iterable) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def write_json(path: Path, results: dict) -> None:
    """Every number of a run, indented, its folder made first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def publish(benchmark: str, results: dict, markdown: str, json_path: Path | None) -> None:
    """The report on stdout and, when asked for, every number in `json_path`."""
    print(markdown)
    if json_path is not None:
        write_json(json_path, results)
        log(benchmark, f"wrote {json_path}")
