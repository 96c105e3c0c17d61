"""Operating a worker: Prometheus metrics and liveness/readiness probes on one HTTP port.

``igata run --metrics-port 9100`` serves:

* ``/metrics``: Prometheus text format (needs ``pip install igata-core[metrics]``);
* ``/healthz``: liveness, 200 while the engine's threads are alive and the predictor loop
  has not been stuck longer than its allowance (503 otherwise: restart the container);
* ``/readyz``: readiness, 200 once the predictor is set up and the run is taking input;
  503 while starting, during a sink outage (intake paused), and when stopping.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from http.server import BaseHTTPRequestHandler

#: Histogram buckets for predict latency (seconds) and batch sizes.
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LAG_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400)


class Metrics:
    """What the engine reports; this base class records nothing (no ``--metrics-port``)."""

    def records_read(self, count: int) -> None:
        """Records taken from the source."""

    def records_written(self, count: int) -> None:
        """Results durably written by the sink."""

    def record_failed(self, stage: str) -> None:
        """One error outcome at ``stage``."""

    def batch(self, size: int, seconds: float) -> None:
        """One predictor call on ``size`` records that took ``seconds``."""

    def in_flight(self, envelopes: int) -> None:
        """Envelopes (messages, files) taken but not yet acked or nacked."""

    def receive_lag(self, seconds: float) -> None:
        """Time from enqueueing a message to this worker receiving it."""

    def settled(self, acked: int, nacked: int) -> None:
        """Envelopes acked and nacked."""

    def sink_healthy(self, healthy: bool) -> None:
        """Whether the sink's last write succeeded."""


class PrometheusMetrics(Metrics):
    """Metrics in a registry of their own (several runs in one process do not collide)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self._read = Counter("igata_records_read", "Records taken from the source", registry=r)
        self._written = Counter("igata_records_written", "Results written by the sink", registry=r)
        self._failed = Counter(
            "igata_records_failed", "Error outcomes by stage", ["stage"], registry=r
        )
        self._batch_size = Histogram(
            "igata_batch_size", "Records per predictor call", buckets=BATCH_BUCKETS, registry=r
        )
        self._latency = Histogram(
            "igata_predict_seconds", "Predictor call latency", buckets=LATENCY_BUCKETS, registry=r
        )
        self._in_flight = Gauge(
            "igata_in_flight_envelopes", "Messages or files taken, not yet settled", registry=r
        )
        self._lag = Histogram(
            "igata_receive_lag_seconds", "Enqueue-to-receive time of messages",
            buckets=LAG_BUCKETS, registry=r,
        )  # fmt: skip
        self._settled = Counter(
            "igata_envelopes_settled", "Envelopes acked or nacked", ["outcome"], registry=r
        )
        self._sink_up = Gauge("igata_sink_up", "1 while the sink accepts writes", registry=r)
        self._sink_up.set(1)

    def records_read(self, count: int) -> None:
        self._read.inc(count)

    def records_written(self, count: int) -> None:
        self._written.inc(count)

    def record_failed(self, stage: str) -> None:
        self._failed.labels(stage=stage).inc()

    def batch(self, size: int, seconds: float) -> None:
        self._batch_size.observe(size)
        self._latency.observe(seconds)

    def in_flight(self, envelopes: int) -> None:
        self._in_flight.set(envelopes)

    def receive_lag(self, seconds: float) -> None:
        self._lag.observe(max(0.0, seconds))

    def settled(self, acked: int, nacked: int) -> None:
        if acked:
            self._settled.labels(outcome="acked").inc(acked)
        if nacked:
            self._settled.labels(outcome="nacked").inc(nacked)

    def sink_healthy(self, healthy: bool) -> None:
        self._sink_up.set(1 if healthy else 0)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class Health:
    """Liveness and readiness, fed by the engine."""

    def __init__(self, stuck_after: float = 300.0):
        self.stuck_after = stuck_after
        self._lock = threading.Lock()
        self._ready = False
        self._reason = "starting"
        self._beat = time.monotonic()
        self._threads: Callable[[], bool] = lambda: True
        self._dead: str | None = None

    def beat(self) -> None:
        """The predictor loop is making progress (called on every loop turn)."""
        self._beat = time.monotonic()

    def set_ready(self, ready: bool, reason: str = "") -> None:
        with self._lock:
            self._ready, self._reason = ready, reason

    def watch_threads(self, alive: Callable[[], bool]) -> None:
        self._threads = alive

    def set_alive(self, alive: bool, reason: str = "") -> None:
        """``False``: the engine has stopped for good (a fatal error); liveness fails."""
        with self._lock:
            self._dead = None if alive else reason or "stopped"
        if not alive:
            self.set_ready(False, reason)

    def liveness(self) -> tuple[bool, str]:
        with self._lock:
            dead = self._dead
        if dead is not None:
            return False, dead
        if not self._threads():
            return False, "an engine thread has died"
        idle = time.monotonic() - self._beat
        if idle > self.stuck_after:
            return False, f"the predictor loop has not turned for {idle:.0f} s"
        return True, "alive"

    def readiness(self) -> tuple[bool, str]:
        with self._lock:
            return self._ready, self._reason or ("ready" if self._ready else "not ready")


class MetricsServer:
    """A small HTTP server for ``/metrics``, ``/healthz`` and ``/readyz`` (own thread)."""

    def __init__(self, host: str, port: int, metrics: PrometheusMetrics, health: Health):
        # Imported here: http.server (and the email package under it) would add ~8 ms to
        # every run's start-up, and most runs serve no metrics.
        from http.server import ThreadingHTTPServer

        handler = _handler(metrics, health)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="igata-metrics", daemon=True
        )

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(metrics: PrometheusMetrics, health: Health) -> type[BaseHTTPRequestHandler]:
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, metrics.exposition(), "text/plain; version=0.0.4")
            elif path in ("/healthz", "/livez"):
                self._probe(*health.liveness())
            elif path == "/readyz":
                self._probe(*health.readiness())
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

        def _probe(self, ok: bool, reason: str) -> None:
            body = json.dumps({"ok": ok, "reason": reason}).encode() + b"\n"
            self._send(200 if ok else 503, body, "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would drown the worker's log

    return Handler
