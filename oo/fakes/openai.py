"""A local OpenAI-compatible server for tests, benchmarks and the demo: the real HTTP path of the
LLM gateway (LiteLLM's ``openai/...`` provider with ``api_base`` pointed here) runs against it.

What it serves (shapes as OpenAI documents them):

- ``POST /v1/chat/completions``: ``model``, ``messages``, optional ``response_format``. With a
  ``json_schema``/``json_object`` response format, or a tip prompt in the messages, it answers the
  tip JSON of the offline template generator for the same request (``tips`` overrides it);
  otherwise it echoes the last user message.
- ``POST /v1/embeddings``: ``input`` (a string or a list), hashed n-gram vectors.
- ``GET /v1/models``.
- Errors are OpenAI's JSON: ``{"error": {"message", "type", "param", "code"}}``.

Fault modes (:attr:`FakeOpenAI.mode`, or ``POST /__fake/mode`` from another process): ``ok``,
``slow`` (answers after :attr:`FakeOpenAI.delay_s`), ``error`` (HTTP 500), ``malformed`` (a
completion whose content is JSON that breaks the tip contract), ``garbage`` (content that is not
JSON at all). ``requests`` counts the calls per path.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Mode = Literal["ok", "slow", "error", "malformed", "garbage"]
MODES: tuple[str, ...] = ("ok", "slow", "error", "malformed", "garbage")
MALFORMED = json.dumps(
    {"tips": [{"content": "", "minutes": 0, "rationale": ""}, {"text": "no content field"}, "just a string"]}
)
GARBAGE = "Sure! Here are some tips: 1) relax 2) breathe {not json"


@dataclass
class FakeOpenAI:
    """The fake's state: its fault mode and scripted answers, shared with the running server."""

    mode: Mode = "ok"
    delay_s: float = 2.0
    model: str = "fake-gpt"
    tips: list[dict[str, Any]] | None = None
    requests: Counter[str] = field(default_factory=Counter)

    def completion_text(self, body: dict[str, Any]) -> str:
        """The content of the answer to one chat completion request in the current mode."""
        if self.mode == "malformed":
            return MALFORMED
        if self.mode == "garbage":
            return GARBAGE
        messages = body.get("messages") or []
        wants_json = (body.get("response_format") or {}).get("type") in ("json_schema", "json_object")
        if self.tips is not None:
            return json.dumps({"tips": self.tips})
        from oo.llm.offline import write_tips
        from oo.llm.prompts import parse_request

        try:
            return write_tips(parse_request(messages)).model_dump_json()
        except ValueError:
            if wants_json:
                return json.dumps({"tips": []})
            last = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
            return f"echo: {last}"


def _error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status)


def create_app(fake: FakeOpenAI) -> Starlette:
    """The Starlette app serving ``fake``."""

    async def fault(path: str) -> Response | None:
        fake.requests[path] += 1
        if fake.mode == "slow":
            await asyncio.sleep(fake.delay_s)
        if fake.mode == "error":
            return _error(500, "The server had an error while processing your request.", "server_error")
        return None

    async def body_of(request: Request) -> dict[str, Any] | Response:
        try:
            body = json.loads(await request.body())
        except json.JSONDecodeError:
            return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        if not isinstance(body, dict) or not body.get("model"):
            return _error(400, "you must provide a model parameter", "invalid_request_error")
        return body

    async def chat(request: Request) -> Response:
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return _error(400, "'messages' must be a non-empty array", "invalid_request_error")
        failed = await fault("chat")
        if failed is not None:
            return failed
        text = fake.completion_text(body)
        words = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": fake.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": words,
                    "completion_tokens": len(text.split()),
                    "total_tokens": words + len(text.split()),
                },
            }
        )

    async def embeddings(request: Request) -> Response:
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return _error(400, "'input' must be a string or a non-empty array of strings", "invalid_request_error")
        failed = await fault("embeddings")
        if failed is not None:
            return failed
        from oo.llm.offline import hash_embed

        vectors = hash_embed(texts)
        if fake.mode in ("malformed", "garbage"):
            vectors = vectors[:-1]  # one vector short: the client must notice
        tokens = sum(len(t.split()) for t in texts)
        return JSONResponse(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                "model": fake.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": fake.model, "object": "model", "owned_by": "oo"}]})

    async def admin_mode(request: Request) -> Response:
        body = json.loads(await request.body() or b"{}")
        if body.get("mode") not in MODES:
            return JSONResponse({"error": f"mode must be one of {MODES}"}, 400)
        fake.mode = body["mode"]
        fake.delay_s = float(body.get("delay_s", fake.delay_s))
        return JSONResponse({"mode": fake.mode, "delay_s": fake.delay_s})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/__fake/mode", admin_mode, methods=["POST"]),
        ]
    )


@contextmanager
def serve_in_thread(fake: FakeOpenAI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run the fake on a loopback port (a free one by default) in a background thread; yield its
    API base URL (``http://127.0.0.1:<port>/v1``)."""
    import uvicorn

    config = uvicorn.Config(create_app(fake), host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fake-openai", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the fake OpenAI server did not start")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def main(host: str = "127.0.0.1", port: int = 8766, mode: Mode = "ok") -> None:
    """Serve the fake until interrupted: ``python -m oo.fakes.openai [port] [mode]``."""
    import uvicorn

    fake = FakeOpenAI(mode=mode)
    print(f"fake OpenAI API at http://{host}:{port}/v1 (mode {mode}; POST /__fake/mode to change)")  # noqa: T201
    uvicorn.run(create_app(fake), host=host, port=port, log_level="warning")


if __name__ == "__main__":
    import sys

    args = sys.argv[1:]
    if len(args) > 1 and args[1] not in MODES:
        raise SystemExit(f"mode must be one of {MODES}")
    main(port=int(args[0]) if args else 8766, mode=args[1] if len(args) > 1 else "ok")  # type: ignore[arg-type]
