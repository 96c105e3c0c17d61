"""The core's delivery contracts, run against the sqs source and the sqs sink on moto."""

from __future__ import annotations

import json

import pytest

from igata_core.testing.contracts import SinkContract, SourceContract
from igata_sqs.clients import make_client
from igata_sqs.sink import SqsSink
from igata_sqs.source import SqsSource


class TestSqsSourceContract(SourceContract):
    redelivery_wait = 1.2  # the queue's visibility timeout (1 s) and the retry delay (1 s)

    @pytest.fixture(autouse=True)
    def _endpoint(self, aws, queues):
        self.queues = queues

    def make_inputs(self, tmp_path, n):
        url = self.queues.create("contract-requests", visibility=1)
        for i in range(n):
            self.queues.send(url, [{"collection_id": "c", "image_id": f"images:{i}",
                                    "s3_uri": f"s3://images/{i}.jpg"}])  # fmt: skip
        return url

    def make_source(self, inputs):
        source = SqsSource({"queue_url": inputs, "wait_time_seconds": 1, "retry_delay": 1})
        source.open()
        return source


class TestSqsSinkContract(SinkContract):
    deduplicates = False  # a queue keeps every copy; each carries the same igata_id

    @pytest.fixture(autouse=True)
    def _endpoint(self, aws, queues):
        self.queues = queues
        self.url = queues.create("contract-results")
        self.stored = []

    def make_sink(self, tmp_path):
        sink = SqsSink({"queue_url": self.url})
        sink.open()
        return sink

    def read_back(self, sink):
        self.stored += [json.loads(m["Body"]) for m in self.queues.drain(self.url)]
        return list(self.stored)

    def break_store(self, sink):
        self.healthy = sink._client
        sink._client = make_client("sqs", endpoint_url="http://127.0.0.1:9", max_attempts=1)

    def repair_store(self, sink):
        sink._client = self.healthy
