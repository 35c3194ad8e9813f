"""Tracing the real service (``bentoml serve``) with OpenTelemetry: ``OO_SERVING__TRACE_SAMPLE_RATE``
is the share of requests traced (0 by default: none, and the decision routes skip the tracing
middleware, see :func:`serving.service.tracing_config`), exported over OTLP/HTTP to
``OO_SERVING__TRACE_OTLP_ENDPOINT``: here a local collector that records the spans it receives.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.serving.conftest import Service, candidates, serving_env, wait_for

pytestmark = pytest.mark.slow


class Collector:
    """An OTLP/HTTP trace receiver on a free loopback port: the ``url.path`` (or ``http.target``)
    of every server span it is sent."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        lock = threading.Lock()
        paths = self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  # the http.server hook's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = ExportTraceServiceRequest.FromString(body)
                with lock:
                    for resource in request.resource_spans:
                        for scope in resource.scope_spans:
                            for span in scope.spans:
                                attrs = {a.key: a.value.string_value for a in span.attributes}
                                paths.append(attrs.get("url.path") or attrs.get("http.target") or span.name)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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
