"""Behavioural probes (`probes.json`, CheckList style): does the model read negation, contrast, idioms, short
reviews and intensity as a reader would? Scores any `texts -> P(positive)` function, so the whole model and each
of its components can be probed alike."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence

PROBES = Path(__file__).resolve().parent / "probes.json"


def load_probes(path: str | Path = PROBES) -> list[dict]:
    return json.loads(Path(path).read_text())["probes"]


def run_probes(score: Callable[[Sequence[str]], list[float]], probes: list[dict] | None = None) -> dict:
    """{"pass_rate": {category: share passed}, "overall": share passed, "failures": [probe + what was seen]}."""
    probes = load_probes() if probes is None else probes
    texts = sorted({t for p in probes for t in ((p["text"],) if "text" in p else (p["weaker"], p["stronger"]))})
    positive = dict(zip(texts, score(texts)))
    passed: dict[str, list[bool]] = defaultdict(list)
    failures = []
    for p in probes:
        if "text" in p:
            seen = {"positive": positive[p["text"]]}
            ok = (seen["positive"] >= 0.5) == (p["label"] == "positive")
        else:
            seen = {"p_weaker": positive[p["weaker"]], "p_stronger": positive[p["stronger"]]}
            gap = seen["p_stronger"] - seen["p_weaker"]
            ok = gap > 0 if p["direction"] == "positive" else gap < 0
        passed[p["category"]].append(ok)
        if not ok:
            failures.append({**p, **{k: round(v, 4) for k, v in seen.items()}})
    every = [ok for oks in passed.values() for ok in oks]
    return {"pass_rate": {c: round(sum(oks) / len(oks), 4) for c, oks in sorted(passed.items())},
            "counts": {c: len(oks) for c, oks in sorted(passed.items())},
            "overall": round(sum(every) / len(every), 4), "failures": failures}
