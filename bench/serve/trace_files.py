"""Request traces to replay: the Mooncake JSONL trace and the Azure LLM inference CSV trace.

    Mooncake (FAST'25, e.g. conversation_trace.jsonl), one JSON object per line:
        {"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47]}
        timestamp in ms; hash_ids name the prompt's 512-token blocks (shared ids: shared prefix)
    Azure LLM inference (AzureLLMInferenceTrace_{code,conv}.csv):
        TIMESTAMP,ContextTokens,GeneratedTokens
        2023-11-16 18:15:46.6805900,374,44           (a datetime, or a number of seconds)

Either may carry an image count (`num_images`, `image_count`, `NumImages`, `ImageCount`; the
match ignores case and underscores); without one every request is text only.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

FORMATS = ("mooncake", "azure")
IMAGE_COUNT_KEYS = ("numimages", "imagecount")  # keys lower-cased, underscores removed


class TraceFormatError(ValueError):
    """The trace file cannot be read; the message names the line and the field."""


@dataclass(frozen=True)
class TraceRequest:
    time_s: float  # the trace's clock (any origin)
    input_tokens: int  # prompt tokens in the trace (image tokens not known: text only here)
    output_tokens: int
    num_images: int = 0
    hash_ids: tuple[int, ...] = ()  # Mooncake's prefix block ids, in prompt order


def trace_format(path: str | Path, fmt: str | None = None) -> str:
    """The format named, or the one the file's extension implies."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise TraceFormatError(f"unknown trace format {fmt!r}; formats: {FORMATS}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "mooncake"
    if suffix == ".csv":
        return "azure"
    raise TraceFormatError(f"{path}: cannot tell the format from {suffix!r}; pass the format")


def load_trace(
    path: str | Path, fmt: str | None = None, max_requests: int | None = None
) -> list[TraceRequest]:
    """The trace's requests in time order, the first `max_requests` of them."""
    fmt = trace_format(path, fmt)
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise TraceFormatError(f"{path}: cannot read the trace: {e}") from None
    requests = parse_mooncake(text) if fmt == "mooncake" else parse_azure(text)
    requests.sort(key=lambda r: r.time_s)
    return requests[:max_requests] if max_requests is not None else requests


def parse_mooncake(text: str) -> list[TraceRequest]:
    requests = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise TraceFormatError(f"line {number}: not JSON: {e}") from None
        if not isinstance(row, dict):
            raise TraceFormatError(f"line {number}: expected an object")
        where = f"line {number}"
        hash_ids = row.get("hash_ids") or []
        if not isinstance(hash_ids, list) or not all(isinstance(h, int) for h in hash_ids):
            raise TraceFormatError(f"{where}: hash_ids must be a list of integers")
        requests.append(
            TraceRequest(
                time_s=_number(row, "timestamp", where) / 1000.0,
                input_tokens=_count(row, "input_length", where),
                output_tokens=_count(row, "output_length", where),
                num_images=_image_count(row, where),
                hash_ids=tuple(hash_ids),
            )
        )
    return requests


def parse_azure(text: str) -> list[TraceRequest]:
    reader = csv.DictReader(text.splitlines())
    missing = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} - set(reader.fieldnames or [])
    if missing:
        raise TraceFormatError(f"header: missing column(s) {sorted(missing)}")
    requests = []
    for number, row in enumerate(reader, start=2):
        where = f"line {number}"
        requests.append(
            TraceRequest(
                time_s=_azure_time(row["TIMESTAMP"], where),
                input_tokens=_count(row, "ContextTokens", where),
                output_tokens=_count(row, "GeneratedTokens", where),
                num_images=_image_count(row, where),
            )
        )
    return requests


def _azure_time(value: str, where: str) -> float:
    """Seconds: a number as is, or a datetime (fractions beyond microseconds are dropped)."""
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    head, dot, fraction = value.partition(".")
    try:
        moment = datetime.fromisoformat(head.replace("T", " "))
    except ValueError:
        raise TraceFormatError(f"{where}: TIMESTAMP {value!r} is not a datetime") from None
    digits = "".join(c for c in fraction if c.isdigit())[:6] if dot else ""
    return moment.timestamp() + (int(digits.ljust(6, "0")) / 1e6 if digits else 0.0)


def _number(row: dict, key: str, where: str) -> float:
    if key not in row:
        raise TraceFormatError(f"{where}: missing {key}")
    try:
        return float(row[key])
    except (TypeError, ValueError):
        raise TraceFormatError(f"{where}: {key} must be a number, got {row[key]!r}") from None


def _count(row: dict, key: str, where: str) -> int:
    value = _number(row, key, where)
    if value < 0 or value != int(value):
        raise TraceFormatError(f"{where}: {key} must be a whole number >= 0, got {row[key]!r}")
    return int(value)


def _image_count(row: dict, where: str) -> int:
    for key in row:
        if key.lower().replace("_", "") in IMAGE_COUNT_KEYS and row[key] not in ("", None):
            return _count(row, key, where)
    return 0
