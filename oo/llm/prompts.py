"""Versioned tip prompts: what the ``tip-generator`` alias is asked, and in which shape it answers.

A prompt version is never edited once tips were served with it (decisions log ``prompt_version``
so off-policy evaluation can tell prompts apart): a changed prompt is a new version. The user
message carries the request as one JSON object (:class:`TipRequest`), which a real model reads as
text and the offline template generator parses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from data_contracts.llm_tips import MAX_TIPS, TipBatch

PAYLOAD_MARKER = "REQUEST:"
"""The user message ends with this marker followed by the :class:`TipRequest` JSON."""

SYSTEM_PROMPTS: dict[str, str] = {
    "tips-v1": (
        "You suggest small next steps that help one person act today. Each tip is one short "
        "imperative sentence (under 120 characters) that takes between 1 and 30 minutes, fits the "
        "time of day, and may build on one of the person's open tasks by name. Never repeat or "
        "paraphrase a tip listed under 'avoid'. Answer with JSON only: "
        '{"tips": [{"content": str, "minutes": int, "rationale": str}]}, exactly n tips.'
    ),
}
"""System prompt of each version; add a version, never edit one."""


class UnknownPrompt(KeyError):
    """A prompt version that :data:`SYSTEM_PROMPTS` does not hold."""


class TipRequest(BaseModel):
    """What the tip prompt tells the model about the person (the JSON after :data:`PAYLOAD_MARKER`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    prompt_version: str
    n: int = Field(ge=1, le=MAX_TIPS)
    context: dict[str, float] = {}
    tasks: list[str] = Field(default=[], description="titles of open tasks, most urgent first")
    avoid: list[str] = Field(default=[], description="tips the person saw recently")


def tip_messages(
    prompt_version: str,
    n: int,
    context: Mapping[str, float] | None = None,
    tasks: Sequence[str] = (),
    avoid: Sequence[str] = (),
) -> list[dict[str, str]]:
    """The chat messages of one tip request in prompt ``prompt_version``.

    Examples
    --------
    >>> msgs = tip_messages("tips-v1", 2, {"hour_of_day": 8.5}, ["Call mum"])
    >>> [m["role"] for m in msgs], parse_request(msgs).tasks
    (['system', 'user'], ['Call mum'])
    """
    if prompt_version not in SYSTEM_PROMPTS:
        raise UnknownPrompt(f"unknown prompt version {prompt_version!r}; known: {sorted(SYSTEM_PROMPTS)}")
    request = TipRequest(
        prompt_version=prompt_version,
        n=n,
        context={k: float(v) for k, v in (context or {}).items()},
        tasks=list(tasks)[:20],
        avoid=list(avoid)[:20],
    )
    user = (
        f"Write {n} tips for this person. Their context (features), open tasks and recent tips "
        f"follow as JSON.\n{PAYLOAD_MARKER}{request.model_dump_json()}"
    )
    return [{"role": "system", "content": SYSTEM_PROMPTS[prompt_version]}, {"role": "user", "content": user}]


def parse_request(messages: Sequence[Mapping[str, Any]]) -> TipRequest:
    """The :class:`TipRequest` of a tip prompt's last user message; ``ValueError`` when absent."""
    for message in reversed(messages):
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, str) and PAYLOAD_MARKER in content:
            return TipRequest.model_validate_json(content.rsplit(PAYLOAD_MARKER, 1)[1])
    raise ValueError(f"no user message with a {PAYLOAD_MARKER} payload")


def response_format() -> dict[str, Any]:
    """The ``response_format`` of a tip request: JSON Schema of :class:`TipBatch`, not strict
    (strict mode refuses the length bounds; the answer is validated here anyway)."""
    return {
        "type": "json_schema",
        "json_schema": {"name": "TipBatch", "schema": TipBatch.model_json_schema(), "strict": False},
    }
