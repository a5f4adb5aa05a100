"""Offline scoring (`python -m model.score`): formats, order, resume after an interruption, streaming memory."""

import csv
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from model.score import InputError, score_file

ROOT = Path(__file__).resolve().parents[1]


def reviews(n):
    return [("great wonderful superb film " if i % 2 else "awful boring waste ") * (i % 5 + 1) for i in range(n)]


def test_txt_to_jsonl_keeps_order_and_every_line(tmp_path, smoke_artifact):
    src = tmp_path / "in.txt"
    texts = reviews(300) + ["", "emoji 🎬 and RTL שלום"]
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "model.score", str(src), "--model-dir", str(smoke_artifact),
                           "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "reviews/s" in done.stdout
    out = [json.loads(line) for line in (tmp_path / "in.scored.jsonl").read_text().splitlines()]
    assert [r["index"] for r in out] == list(range(len(texts)))
    assert out[0]["label"] == "negative" and out[1]["label"] == "positive"
    assert all(abs(r["positive"] + r["negative"] - 1) < 1e-5 for r in out)
    assert out[300]["tokens"] == 0 and not any(r["truncated"] for r in out)


def test_csv_with_quoted_multiline_cells_and_ids(tmp_path, loaded_model):
    src = tmp_path / "in.csv"
    with src.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "review"])
        w.writerows([[f"r{i}", f"great \"film\"\nline two {i}"] for i in range(50)])
    out = tmp_path / "out.csv"
    summary = score_file(src, out, model=loaded_model, fmt="csv", column="review", id_column="id", progress=False)
    assert summary["scored"] == 50
    rows = list(csv.DictReader(out.open()))
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(50)]
    with pytest.raises(InputError, match="no column 'text'"):
        score_file(src, tmp_path / "x.csv", model=loaded_model, fmt="csv", column="text", id_column=None,
                   progress=False)


def test_jsonl_bad_line_is_a_clear_error(tmp_path, loaded_model):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "good"}\n{"text": 5}\n')
    with pytest.raises(InputError, match="line 2 has no string field 'text'"):
        score_file(src, tmp_path / "o.jsonl", model=loaded_model, fmt="jsonl", column="text", id_column=None,
                   progress=False)


def test_resume_after_interruption_gives_the_same_output(tmp_path, loaded_model):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(reviews(500))))
    full = tmp_path / "full.jsonl"
    score_file(src, full, model=loaded_model, fmt="jsonl", column="text", id_column="id", chunk=64, progress=False)
    # An interrupted run: 130 complete records and half of the next line.
    lines = full.read_text().splitlines(keepends=True)
    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join(lines[:130]) + lines[130][:20])
    summary = score_file(src, partial, model=loaded_model, fmt="jsonl", column="text", id_column="id", chunk=64,
                         progress=False)
    assert summary["skipped_already_done"] == 130 and summary["scored"] == 370
    assert partial.read_text() == full.read_text()


def test_memory_stays_flat_as_the_file_grows(tmp_path, loaded_model):
    src = tmp_path / "big.txt"
    line = "great wonderful superb film and the plot was fun " * 10  # ~500 characters
    src.write_text((line + "\n") * 8000)
    assert src.stat().st_size > 3_500_000
    tracemalloc.start()
    score_file(src, tmp_path / "out.jsonl", model=loaded_model, fmt="txt", column="text", id_column=None,
               chunk=256, progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Streamed in chunks of 256 lines: the Python heap peaks far below the file's size.
    assert peak < 1_500_000, peak
