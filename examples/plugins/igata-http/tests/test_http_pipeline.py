"""igata-http in whole pipelines: inputs fetched over HTTP, results POSTed to a webhook."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar

from igata_core import HOOK_API_VERSION, Envelope, Item, Option, PredictorBase, Source
from igata_core.plugins import build_registry
from igata_core.testing import run_pipeline
from igata_http import plugin

if TYPE_CHECKING:
    from conftest import LocalServer


class UrlSource(Source):
    """The URLs given as inputs, one request each (an SQS queue plays this part in production)."""

    name = "url-list"
    options: ClassVar[tuple[Option, ...]] = (Option("inputs", "list", default=[], help="URLs"),)

    def envelopes(self) -> Iterator[Envelope]:
        for index, url in enumerate(self.opts["inputs"]):
            item = Item(identity=f"req-{index}", uri=url, meta={"request": index})
            yield Envelope(ref=url, items=[item])


class ColorPredictor(PredictorBase):
    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        return {"color": input_record["color"].upper()}


def test_entry_point_is_installed() -> None:
    entry_points = {ep.name: ep.value for ep in metadata.entry_points(group="igata")}
    assert entry_points.get("http") == "igata_http.plugin", (
        "igata-http is not installed: run 'pip install -e .' in its directory"
    )
    assert plugin.IGATA_HOOK_API == HOOK_API_VERSION


def test_fetch_predict_post(server: LocalServer) -> None:
    for index, color in enumerate(["red", "green", "blue"]):
        body = json.dumps({"color": color}).encode()
        server.serve(f"/items/{index}.json", server.answer(200, body))
    urls = [server.url(f"/items/{i}.json") for i in range(3)]
    urls.append(server.url("/items/3.json"))  # 404
    urls.append(server.url("/items/0.json", host="localhost"))  # not an allowed host
    registry = build_registry(entry_points=False, extra_plugins=[("http", plugin)])

    result = run_pipeline(
        UrlSource,
        "webhook",
        ColorPredictor,
        inputs=urls,
        sink_options={"url": server.url("/hook"), "backoff": 0.01},
        loader_options={"http": {"allowed_hosts": f"127.0.0.1:{server.port}", "retries": 0}},
        registry=registry,
        flush_interval=0.1,
    )

    assert result.exit_code == 1, result.summary
    received = server.hook_records
    assert {k: v["color"] for k, v in received.items()} == {
        "req-0": "RED",
        "req-1": "GREEN",
        "req-2": "BLUE",
    }
    assert received["req-0"]["igata_input"] == urls[0]
    assert received["req-0"]["request"] == 0 and received["req-0"]["size"] > 0
    failures = {o.identity: (o.stage, o.message) for o in result.outcomes}
    assert set(failures) == {"req-3", "req-4"}
    assert failures["req-3"][0] == "load" and "HTTP 404" in failures["req-3"][1]
    assert failures["req-4"][0] == "load" and "not in allowed_hosts" in failures["req-4"][1]
    assert not server.seen("/items/3.json")[1:], "a 404 is not retried"
