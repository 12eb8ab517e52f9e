"""The service's Prometheus metrics, in a registry of each app's own (not the process-global
one, so that several apps in one process, as in the tests, count apart)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Request latency buckets; 25 ms is the `/recommend` p99 target (benchmarks/load_test.py)."""
CLIENT_GONE = 499
"""The status counted for a request whose client hung up before it was answered (nginx's
code): the service did nothing wrong, so it is not a 5xx."""

FallbackCounts = Callable[[], dict[tuple[str, str], int]]
ReloadCounts = Callable[[], dict[tuple[str, str], int]]
"""Reloads by (space, outcome): "reloaded" or "failed"."""
DriftFigures = Callable[[], dict[str, dict[str, float]]]
"""By space, the figures of its live generation against the one it replaced."""


class _Fallbacks(Collector):
    """Store calls served by a replica, read from the recommender at each scrape."""

    def __init__(self, counts: FallbackCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "embedrec_store_fallbacks",
            "Store calls served by a replica.",
            labels=["space", "operation"],
        )
        for (space, op), n in sorted(self.counts().items()):
            family.add_metric([space, op], n)
        yield family


class _Reloads(Collector):
    """Reloads and the drift of each space's live generation against the one it replaced,
    read from the reloader at each scrape (the comparison runs in its own thread, after a
    swap, never while a request or a scrape waits)."""

    def __init__(self, counts: ReloadCounts, drift: DriftFigures, gauges: dict[str, str]):
        self.counts, self.figures, self.gauges = counts, drift, gauges

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "embedrec_reloads", "Generations swapped in, or that failed to load, by space.",
            labels=["space", "outcome"],
        )  # fmt: skip
        for (space, outcome), n in sorted(self.counts().items()):
            family.add_metric([space, outcome], n)
        yield family
        figures = self.figures()
        for name, help_text in self.gauges.items():
            gauge = GaugeMetricFamily(f"embedrec_drift_{name}", help_text, labels=["space"])
            for space, values in sorted(figures.items()):
                if name in values:
                    gauge.add_metric([space], values[name])
            yield gauge


class _Registry(Collector):
    """Another registry's metrics, exported with the service's (the event path's)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


class ServiceMetrics:
    """Request latency and counts by endpoint and status, the replica fallbacks, and (with
    a reloader) reloads and drift gauges."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, fallbacks: FallbackCounts) -> None:
        self.registry = CollectorRegistry()
        self._duration = Histogram(
            "embedrec_request_duration_seconds",
            "Time to answer a request, by endpoint.",
            ["endpoint"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self._requests = Counter(
            "embedrec_requests",
            "Requests answered, by endpoint and status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.registry.register(_Fallbacks(fallbacks))
        self._children: dict[tuple[str, int], tuple[Histogram, Counter]] = {}

    def watch_reloads(self, counts: ReloadCounts, drift: DriftFigures, gauges: dict[str, str]):
        """Export reload counts and the drift `gauges` (name -> help) of each space."""
        self.registry.register(_Reloads(counts, drift, gauges))

    def watch_registry(self, registry: CollectorRegistry) -> None:
        """Export `registry`'s metrics too (the live events', embedrec.retrieval.events.stats)."""
        self.registry.register(_Registry(registry))

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        children = self._children.get((endpoint, status))
        if children is None:  # labels() takes a lock and checks its values: once per pair
            children = (
                self._duration.labels(endpoint),
                self._requests.labels(endpoint, str(status)),
            )
            self._children[(endpoint, status)] = children
        children[0].observe(seconds)
        children[1].inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
