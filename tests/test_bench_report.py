"""`make bench`'s arithmetic: every ratio against the best the other side can do, for the default layout."""

from __future__ import annotations

from bench.run import default_layout, ratios, report


def row(server: str, connections: int, reviews_per_s: float, p50_ms: float = 10.0, texts: int = 1) -> dict:
    return {"server": server, "connections": connections, "texts_per_request": texts, "requests_per_s":
            reviews_per_s / texts, "reviews_per_s": reviews_per_s, "p50_ms": p50_ms, "p90_ms": p50_ms,
            "p99_ms": p50_ms, "non_2xx": 0, "status_429_503": 0, "socket_errors": 0, "server_cpu_cores": 1.0,
            "server_peak_rss_mb": 100.0}


def test_ratios_use_the_best_in_process_layout_the_default_service_layout_and_the_best_naive_layout():
    default = "service-{}x{}".format(*default_layout("cpu"))
    other = "service-9x9"
    results = {
        "device": "cpu", "cpu_count": 2, "reviews": 10, "duration_s": 1, "ready_s": {default: 1.0, other: 2.0},
        "default_service": default,
        "in_process": [{"callers": 1, "threads": 2, "batch_size": 1, "reviews_per_s": 100.0, "latency_ms": 8.0},
                       {"callers": 2, "threads": 1, "batch_size": 128, "reviews_per_s": 400.0, "latency_ms": 600.0}],
        "http": [row(default, 1, 90, p50_ms=11.0), row(default, 64, 300), row(other, 64, 380),
                 row("naive-1x1", 1, 100, p50_ms=9.0), row("naive-1x1", 64, 100), row("naive-2x1", 64, 150),
                 row(default, 16, 360, texts=32)],
    }
    out = ratios(results)
    assert out["service/limit, single texts, 64 conns"] == "75%"  # 300 of 400, not the other layout's 380
    assert out["service/naive best, single texts, 64 conns"] == "2.00x (naive-2x1)"
    assert out["service/limit, 32-text requests, 16 conns"] == "90%"
    assert out["p50 at 1 conn vs in-process batch-1 latency"] == "11.0 ms vs 8.0 ms"
    assert out["p50 at 1 conn, service vs naive best"] == "11.0 ms vs 9.0 ms (naive-1x1)"
    results["ratios"] = out
    text = report(results, None)
    assert f"ratios are those of the default layout, {default}" in text
    assert "| service-9x9 | 64 | 1 | 380.0 |" in text


def test_ratios_around_a_run_use_the_better_limit_check_either_side_of_the_default_layouts_server():
    default = "service-{}x{}".format(*default_layout("cpu"))
    best = {"callers": 2, "threads": 1, "batch_size": 32, "latency_ms": 60.0}
    results = {
        "device": "cpu", "cpu_count": 2, "reviews": 10, "duration_s": 1, "ready_s": {default: 1.0},
        "default_service": default,
        "in_process": [{**best, "reviews_per_s": 500.0}],
        "limit_checks": [{**best, "when": f"before {default}", "reviews_per_s": 380.0},
                         {**best, "when": "before naive-1x1", "reviews_per_s": 400.0},
                         {**best, "when": "after the servers", "reviews_per_s": 450.0}],
        "http": [row(default, 64, 300), row(default, 16, 380, texts=32), row("naive-1x1", 64, 100)],
    }
    out = ratios(results)
    assert out["service/limit, single texts, 64 conns"] == "60%"  # against the first sweep's best, 500
    assert out["service/limit around its run, single texts, 64 conns"] == "75%"  # against 400, not 380 or 450
    assert out["service/limit around its run, 32-text requests, 16 conns"] == "95%"
    results["ratios"] = out
    text = report(results, None)
    assert (f"measured again during the run: before {default} 380.0, before naive-1x1 400.0, after the servers "
            "450.0 reviews/s") in text
    del results["limit_checks"]  # a run from before the checks (an older GPU run) reads as it did
    assert not any("around" in key for key in ratios(results))


def test_interleaved_ratios_take_each_rounds_best_naive_layout_and_report_the_median():
    default = "service-{}x{}".format(*default_layout("cpu"))
    rounds = {1: (200.0, 90.0, 100.0), 2: (210.0, 110.0, 95.0), 3: (150.0, 80.0, 50.0)}  # service, naive 1x1, 2x1
    interleaved = [{"round": r, "server": name, "connections": 64, "requests_per_s": v, "p50_ms": 5.0}
                   for r, values in rounds.items() for name, v in zip([default, "naive-1x1", "naive-2x1"], values)]
    results = {
        "device": "cpu", "cpu_count": 2, "reviews": 10, "duration_s": 1, "ready_s": {default: 1.0},
        "default_service": default,
        "in_process": [{"callers": 2, "threads": 1, "batch_size": 32, "reviews_per_s": 500.0, "latency_ms": 60.0}],
        "http": [row(default, 64, 300), row("naive-2x1", 64, 100)],
        "interleaved": interleaved + [{"round": 1, "server": default, "connections": 1, "requests_per_s": 100.0,
                                       "p50_ms": 9.0}],  # a level without a naive run has no ratio
    }
    out = ratios(results)
    # 200/100, 210/110, 150/80: each round against its own best naive layout.
    assert out["service/naive best, interleaved, single texts, 64 conns"] == \
        "1.91x, the median of 3 rounds (1.88-2.00x)"
    assert not any("interleaved, single texts, 1 conns" in key for key in out)
    # Against the layout with the best median (naive-2x1: 95 against 90), round by round: 200/100, 210/95, 150/50.
    assert out["service/naive best layout by median, interleaved, single texts, 64 conns"] == \
        "2.21x (naive-2x1), the median of 3 rounds (2.00-3.00x)"
    results["ratios"] = out
    text = report(results, None)
    assert f"| conns | round | {default} | naive-1x1 | naive-2x1 | service / naive best |" in text
    assert "| 64 | 2 | 210.0 | 110.0 | 95.0 | 1.91x |" in text
