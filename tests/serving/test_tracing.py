"""Tracing the real service (``bentoml serve``) with OpenTelemetry: ``OO_SERVING__TRACE_SAMPLE_RATE``
is the share of requests traced (0 by default: none, and the decision routes skip the tracing
middleware, see :func:`serving.service.tracing_config`), exported over OTLP/HTTP to
``OO_SERVING__TRACE_OTLP_ENDPOINT``: here a local collector that records the spans it receives.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.receiver import PostReceiver
from tests.serving.conftest import Service, candidates, serving_env, wait_for

pytestmark = pytest.mark.slow


def span_paths(body: bytes) -> list[str]:
    """The ``url.path`` (or ``http.target``, or the name) of every span in an OTLP/HTTP export."""
    paths = []
    for resource in ExportTraceServiceRequest.FromString(body).resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                attrs = {a.key: a.value.string_value for a in span.attributes}
                paths.append(attrs.get("url.path") or attrs.get("http.target") or span.name)
    return paths


class Collector(PostReceiver):
    """An OTLP/HTTP trace receiver: the path of every span it is sent."""

    def __init__(self) -> None:
        super().__init__("/v1/traces", span_paths)

    @property
    def paths(self) -> list[str]:
        return [p for body in self.bodies for p in body]


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    var = tmp_path_factory.mktemp("tracing")
    collector = Collector()
    env = serving_env(
        var,
        OO_SERVING__TRACE_SAMPLE_RATE="1",
        OO_SERVING__TRACE_OTLP_ENDPOINT=collector.url,
    )
    service = Service(env, var / "serve.log")
    try:
        yield {"service": service, "collector": collector}
    finally:
        service.stop()
        collector.close()


def test_a_rank_is_traced_when_the_sample_rate_asks_for_it(traced: dict[str, Any]) -> None:
    service: Service = traced["service"]
    collector: Collector = traced["collector"]
    r = service.post("/rank", {"user_id": f"u-{uuid.uuid4().hex[:6]}", "candidates": candidates(3)})
    assert r.status_code == 200, r.text
    # BentoML's batch span processor exports every few seconds
    wait_for(lambda: "/rank" in collector.paths, 30, lambda: f"no span of /rank: {collector.paths}")
