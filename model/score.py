"""Score a big file of reviews offline, through the same model and batching path as the service.

    python -m model.score reviews.txt                       # one review per line -> reviews.scored.jsonl
    python -m model.score reviews.csv --column review -o scored.csv
    python -m model.score reviews.jsonl --field text -o scored.jsonl

Streams the input in chunks (constant memory, whatever the file size), shows a progress bar over the input's
bytes, writes one output record per input record in input order, and resumes after an interruption: records
already in the output are skipped (a half-written last line is dropped first). Prints reviews/s at the end.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

import model as sentiment_model
from model.predictor import BATCH_SIZE, MAX_BATCH_TOKENS, label_for

FORMATS = ("txt", "csv", "jsonl")
OUTPUT_FIELDS = ["index", "id", "label", "positive", "negative", "tokens", "truncated"]


class InputError(ValueError):
    """The input file cannot be read as asked (unknown format, missing column or field, bad JSON line)."""


def detect_format(path: Path, explicit: str | None) -> str:
    fmt = explicit or path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise InputError(f"cannot tell the format of {path.name}: use a .txt, .csv or .jsonl file or --format")
    return fmt


def read_records(handle, fmt: str, column: str, id_column: str | None) -> Iterator[tuple[str | None, str]]:
    """(id, text) per input record, streamed."""
    if fmt == "txt":
        for line in handle:
            yield None, line.rstrip("\n").rstrip("\r")
    elif fmt == "csv":
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise InputError(f"CSV has no column {column!r} (columns: {reader.fieldnames}); pass --column NAME")
        for row in reader:
            yield (row.get(id_column) if id_column else None), row[column] or ""
    else:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"line {number} is not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get(column), str):
                raise InputError(f"line {number} has no string field {column!r}; pass --field NAME")
            yield (str(obj[id_column]) if id_column and id_column in obj else None), obj[column]


def completed_records(out: Path, out_fmt: str) -> int:
    """How many records a previous run finished; a torn last line (killed mid-write) is cut off."""
    if not out.exists():
        return 0
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        out.write_bytes(data)
    lines = data.count(b"\n")
    return max(0, lines - 1) if out_fmt == "csv" else lines


class Writer:
    def __init__(self, out: Path, out_fmt: str, resume_from: int):
        self.handle = out.open("a", encoding="utf-8", newline="")
        self.fmt = out_fmt
        if out_fmt == "csv":
            self.csv = csv.DictWriter(self.handle, fieldnames=OUTPUT_FIELDS)
            if resume_from == 0 and self.handle.tell() == 0:
                self.csv.writeheader()

    def write(self, record: dict) -> None:
        if self.fmt == "csv":
            self.csv.writerow(record)
        else:
            self.handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self.handle.close()


def score_file(source: Path, out: Path, *, model, fmt: str, column: str, id_column: str | None,
               chunk: int = 2048, batch_size: int = BATCH_SIZE, max_batch_tokens: int = MAX_BATCH_TOKENS,
               uncertain_below: float | None = None, progress: bool = True) -> dict:
    out_fmt = "csv" if out.suffix.lower() == ".csv" else "jsonl"
    done = completed_records(out, out_fmt)
    writer = Writer(out, out_fmt, done)
    scored = 0
    started = time.perf_counter()
    with source.open("r", encoding="utf-8", errors="replace", newline="" if fmt == "csv" else None) as handle, \
            tqdm(total=source.stat().st_size, unit="B", unit_scale=True, disable=not progress,
                 desc=f"scoring {source.name}") as bar:
        records = read_records(handle, fmt, column, id_column)
        index = 0
        buffer: list[tuple[int, str | None, str]] = []

        def flush() -> None:
            nonlocal scored
            predictions = model.predict([t for _, _, t in buffer], batch_size=batch_size,
                                        max_batch_tokens=max_batch_tokens)
            for (i, rid, _), pred in zip(buffer, predictions):
                writer.write({"index": i, "id": rid, "label": label_for(pred.positive, model.labels, uncertain_below),
                              "positive": round(pred.positive, 6), "negative": round(1 - pred.positive, 6),
                              "tokens": pred.tokens, "truncated": pred.truncated})
            scored += len(buffer)
            buffer.clear()
            writer.handle.flush()
            bar.n = handle.buffer.tell() if hasattr(handle, "buffer") else bar.n
            bar.refresh()

        for rid, text in records:
            if index >= done:
                buffer.append((index, rid, text))
                if len(buffer) == chunk:
                    flush()
            index += 1
        if buffer:
            flush()
        bar.n = bar.total
        bar.refresh()
    writer.close()
    seconds = time.perf_counter() - started
    return {"records": index, "skipped_already_done": min(done, index), "scored": scored, "seconds": seconds,
            "reviews_per_second": scored / seconds if seconds > 0 else 0.0, "output": str(out)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.score", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help=".txt (one review per line), .csv or .jsonl file")
    p.add_argument("-o", "--output", type=Path, help="output .jsonl or .csv (default: INPUT.scored.jsonl)")
    p.add_argument("--format", choices=FORMATS, help="input format (default: from the file extension)")
    p.add_argument("--column", "--field", dest="column", default="text", help="CSV column / JSON field with the text")
    p.add_argument("--id-column", "--id-field", dest="id_column", help="CSV column / JSON field copied as `id`")
    p.add_argument("--model-dir", type=Path, default=None, help="artifact folder (default: the shipped model)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="most texts per forward pass")
    p.add_argument("--max-batch-tokens", type=int, default=MAX_BATCH_TOKENS,
                   help="most padded tokens (longest text x texts) per forward pass")
    p.add_argument("--chunk", type=int, default=2048, help="records read, scored and written at a time")
    p.add_argument("--uncertain-below", type=float, default=None, help="label results below this confidence "
                                                                       "\"uncertain\"")
    p.add_argument("--restart", action="store_true", help="ignore an existing output and start over")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    try:
        fmt = detect_format(a.input, a.format)
        if not a.input.is_file():
            raise InputError(f"input file not found: {a.input}")
        out = a.output or a.input.with_name(a.input.stem + ".scored.jsonl")
        if a.restart and out.exists():
            out.unlink()
        loaded = sentiment_model.load_model(a.model_dir or sentiment_model.DEFAULT_ARTIFACT, device=a.device)
        summary = score_file(a.input, out, model=loaded, fmt=fmt, column=a.column, id_column=a.id_column,
                             chunk=a.chunk, batch_size=a.batch_size, max_batch_tokens=a.max_batch_tokens,
                             uncertain_below=a.uncertain_below,
                             progress=not a.quiet)
    except (InputError, sentiment_model.ArtifactError, ValueError) as exc:
        print(f"score: {exc}", file=sys.stderr)
        return 2
    print(f"scored {summary['scored']} reviews ({summary['skipped_already_done']} already done) in "
          f"{summary['seconds']:.1f} s: {summary['reviews_per_second']:.0f} reviews/s -> {summary['output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
