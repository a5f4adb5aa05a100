"""Prometheus metrics, in a registry per app (so several apps in one test process do not collide).

With several server processes (app.processes) each process writes its values to files in PROMETHEUS_MULTIPROC_DIR
and `/metrics`, whichever process answers it, reads them all: counters and histograms summed, each gauge as its
`multiprocess_mode` says.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

# The `*_created` timestamp series double the output and nobody here graphs them.
disable_created_metrics()

# Powers of two up to the largest allowed max_batch_size.
BATCH_SIZE_BUCKETS = tuple(float(2**i) for i in range(13))
SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("sentiment_requests", "POST /predict requests answered, by HTTP status",
                                ["status"], registry=r)
        self.request_seconds = Histogram("sentiment_request_seconds", "POST /predict latency, arrival to answer",
                                         buckets=SECONDS_BUCKETS, registry=r)
        self.texts = Counter("sentiment_texts", "texts classified", registry=r)
        self.batch_size = Histogram("sentiment_batch_size", "texts per forward pass", buckets=BATCH_SIZE_BUCKETS,
                                    registry=r)
        self.batch_tokens = Histogram("sentiment_batch_tokens", "padded tokens per forward pass (longest text x "
                                      "texts, estimated from text length: batches are planned before tokenising)",
                                      buckets=tuple(float(4**i) for i in range(1, 10)), registry=r)
        self.queue_seconds = Histogram("sentiment_queue_seconds", "time a text waited from admission to its "
                                       "forward pass", buckets=SECONDS_BUCKETS, registry=r)
        self.inference_seconds = Histogram("sentiment_inference_seconds", "duration of one forward pass",
                                           buckets=SECONDS_BUCKETS, registry=r)
        self.dropped = Counter("sentiment_dropped_texts", "texts dropped before their forward pass because the "
                               "caller stopped waiting (client disconnected or deadline passed)", ["reason"],
                               registry=r)
        self.rejected = Counter("sentiment_rejected_texts", "texts refused at admission (queue full, shutting "
                                "down, explanations that could not finish in time)", ["reason"], registry=r)
        self.explain_backlog_seconds = Gauge("sentiment_explain_backlog_seconds", "estimated model time of the "
                                             "explanations admitted and not yet answered", multiprocess_mode="livesum",
                                             registry=r)
        self.explained = Counter("sentiment_explained_texts", "texts explained (?explain=true)", registry=r)
        self.explain_seconds = Histogram("sentiment_explain_seconds", "time to explain one text (its occlusion "
                                         "forward passes)", buckets=SECONDS_BUCKETS, registry=r)
        self.malloc_trim_seconds = Histogram("sentiment_malloc_trim_seconds", "time a periodic malloc_trim held "
                                             "the forward-pass thread (SENTIMENT_MALLOC_TRIM_S)",
                                             buckets=SECONDS_BUCKETS, registry=r)
        self.helped_passes = Counter("sentiment_helped_passes", "forward passes that ran their LSTM's two "
                                     "directions on two threads, a core being idle (SENTIMENT_USE_IDLE_CORES)",
                                     registry=r)
        self.failures = Counter("sentiment_inference_failures", "texts whose forward pass raised", registry=r)
        self.queue_depth = Gauge("sentiment_queue_depth", "texts admitted and waiting for a forward pass",
                                 multiprocess_mode="livesum", registry=r)
        self.ready = Gauge("sentiment_ready", "1 while the server admits work (with several processes: all of "
                           "them)", multiprocess_mode="livemin", registry=r)

    def render(self) -> bytes:
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not directory:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, directory)
        return generate_latest(registry)
