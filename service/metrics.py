"""The service's Prometheus metrics (scraped from /metrics; the nightly job pushes its own,
smescore/monitoring/metrics.py). Latency by endpoint and by the role of the official score."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

# Every series /metrics exposes (the alert rules and the dashboard may read only these).
NAMES = (
    "smescore_service_request_duration_seconds_bucket",
    "smescore_service_request_duration_seconds_count",
    "smescore_service_request_duration_seconds_sum",
    "smescore_service_requests_total",
    "smescore_service_batch_rows_bucket", "smescore_service_batch_rows_count",
    "smescore_service_batch_rows_sum",
    "smescore_service_shadow_scores_total",
    "smescore_service_model_info",
    "smescore_service_model_swaps_total",
)


class ServiceMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "smescore_service_request_duration_seconds", "Request latency, by endpoint and role "
            "of the official score (champion, canary, rules, in_default, mixed, none)",
            ["endpoint", "role"], buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("smescore_service_requests", "Requests answered, by endpoint and "
                                "HTTP status", ["endpoint", "status"], registry=r)
        self.batch_rows = Histogram("smescore_service_batch_rows", "Firms per model call "
                                    "(dynamic batching)", buckets=BATCH_BUCKETS, registry=r)
        self.shadow = Counter("smescore_service_shadow_scores", "Scores computed in shadow, by "
                              "model version and outcome (ok, failed)",
                              ["model_version", "outcome"], registry=r)
        self.model_info = Gauge("smescore_service_model_info", "1 for each model version "
                                "serving, by role (champion, challenger)",
                                ["model_version", "role"], registry=r)
        self.swaps = Counter("smescore_service_model_swaps", "Model set changes picked up from "
                             "the registry, by outcome (swapped, failed)", ["outcome"], registry=r)

    def serving(self, champion: str, challengers) -> None:
        self.model_info.clear()
        self.model_info.labels(champion, "champion").set(1)
        for v in challengers:
            self.model_info.labels(v, "challenger").set(1)
