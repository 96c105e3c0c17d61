"""Operating a worker: Prometheus metrics, liveness and readiness probes (--metrics-port)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_core import (
    EchoPredictor,
    ListSource,
    RecordingSink,
    clean_env,
    core_registry,
    data_envelopes,
    write_images,
)

from igata_core.assembly import RunRequest, assemble
from igata_core.metrics import Health, MetricsServer, PrometheusMetrics
from igata_core.pipeline import Pipeline

pytest.importorskip("prometheus_client")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{labels} not in metrics:\n{text}"
    return float(match.group(1))


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def started_pipeline(source, sink, **settings):
    request = RunRequest(source=source, sink=sink, predictor=EchoPredictor, run_options=settings,
                         environ={})  # fmt: skip
    assembly = assemble(core_registry(), request)
    metrics, health = PrometheusMetrics(), Health()
    server = MetricsServer("127.0.0.1", 0, metrics, health).start()
    pipeline = Pipeline(
        assembly.source, assembly.sink, assembly.predictor, assembly.reader, assembly.settings,
        metrics=metrics, health=health,
    )  # fmt: skip
    thread = threading.Thread(target=pipeline.run, daemon=True)
    return pipeline, server, thread, f"http://127.0.0.1:{server.port}"


def test_metrics_count_records_batches_failures_and_settled_envelopes():
    envelopes = data_envelopes(range(20))
    envelopes[3].enqueued_at = time.time() - 2.0
    source = ListSource(envelopes, unbounded=True)
    sink = RecordingSink(reject={"id-5"})
    pipeline, server, thread, url = started_pipeline(
        source, sink, batch_size=4, flush_interval=0.05
    )
    try:
        assert get(url + "/readyz")[0] == 503  # not started yet
        thread.start()
        wait_for(lambda: len(source.acked) + len(source.nacked) == 20)
        status, text = get(url + "/metrics")
        assert status == 200
        assert sample(text, "igata_records_read_total") == 20
        assert sample(text, "igata_records_written_total") == 19
        assert sample(text, "igata_records_failed_total", '{stage="sink"}') == 1
        assert sample(text, "igata_envelopes_settled_total", '{outcome="acked"}') == 19
        assert sample(text, "igata_envelopes_settled_total", '{outcome="nacked"}') == 1
        assert sample(text, "igata_in_flight_envelopes") == 0
        assert 5 <= sample(text, "igata_batch_size_count") <= 20
        assert sample(text, "igata_batch_size_sum") == 20
        assert sample(text, "igata_predict_seconds_count") == sample(text, "igata_batch_size_count")
        assert sample(text, "igata_receive_lag_seconds_count") == 1
        assert sample(text, "igata_receive_lag_seconds_sum") >= 2.0
        assert sample(text, "igata_sink_up") == 1
        assert get(url + "/healthz")[0] == 200
        status, body = get(url + "/readyz")
        assert status == 200 and json.loads(body)["ok"] is True
        assert get(url + "/nothing")[0] == 404
    finally:
        pipeline.stop()
        thread.join(10)
        server.close()
    assert not thread.is_alive()


def test_readiness_fails_during_a_sink_outage_and_recovers():
    source = ListSource(data_envelopes(range(3)), unbounded=True)
    sink = RecordingSink(fail_for=1.5)
    pipeline, server, thread, url = started_pipeline(
        source, sink, flush_interval=0.05, sink_retry_budget=30
    )
    thread.start()
    try:
        wait_for(lambda: sink.failed_flushes >= 1)
        status, body = get(url + "/readyz")
        assert status == 503 and "sink 'recording' unavailable" in json.loads(body)["reason"]
        assert sample(get(url + "/metrics")[1], "igata_sink_up") == 0
        assert get(url + "/healthz")[0] == 200  # alive: a sink outage is no reason to restart
        wait_for(lambda: len(source.acked) == 3)
        assert get(url + "/readyz")[0] == 200
        assert sample(get(url + "/metrics")[1], "igata_sink_up") == 1
        pipeline.stop()
        thread.join(10)
        status, body = get(url + "/readyz")
        assert status == 503 and json.loads(body)["reason"] == "stopping"
    finally:
        pipeline.stop()
        server.close()


def test_liveness_fails_when_the_predictor_loop_is_stuck():
    health = Health(stuck_after=0.2)
    health.beat()
    assert health.liveness()[0] is True
    time.sleep(0.3)
    alive, reason = health.liveness()
    assert alive is False and "has not turned" in reason
    health.beat()
    health.watch_threads(lambda: False)
    assert health.liveness() == (False, "an engine thread has died")


def test_the_cli_serves_metrics_while_a_run_goes_on(tmp_path):
    write_images(tmp_path / "images", 40)
    env = clean_env(IGATA_LOAD_PLUGINS="")
    process = subprocess.Popen(
        [sys.executable, "-m", "igata_core", "run", "--source", "files", "--sink", "null",
         "--predictor", "helpers_core:SlowPredictor", "--metrics-port", "0",
         "--metrics-host", "127.0.0.1", "--batch-size", "1", str(tmp_path / "images")],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        port = None
        assert process.stderr is not None
        for line in process.stderr:
            found = re.search(r"metrics and probes on http://127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port, "the metrics address was not logged"
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: get(url + "/readyz")[0] == 200)
        text = get(url + "/metrics")[1]
        assert "igata_records_read_total" in text
        assert process.wait(60) == 0
    finally:
        process.kill()
        process.wait()
