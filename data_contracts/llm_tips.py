"""What an LLM must answer when asked for tips: the structured output of the tip prompt.

The tip generator is called with ``response_format=TipBatch`` (JSON Schema, strict), and its
answer is validated against these models before anything is served: a tip that does not parse
is dropped and counted, never shown.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_TIPS = 10
"""The most tips one answer may hold."""


class LLMTip(BaseModel):
    """One small next step written by an LLM.

    Examples
    --------
    >>> LLMTip(content="Put your running shoes by the door", minutes=2, rationale="").minutes
    2
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)
    content: str = Field(min_length=3, max_length=200, description="the tip, one imperative sentence")
    minutes: int = Field(ge=1, le=120, description="how long it takes")
    rationale: str = Field(max_length=300, description="why now, for this person (may be empty)")


class TipBatch(BaseModel):
    """The whole answer to one tip prompt.

    Examples
    --------
    >>> answer = '{"tips": [{"content": "Drink water", "minutes": 1, "rationale": ""}]}'
    >>> TipBatch.model_validate_json(answer).tips[0].content
    'Drink water'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    tips: list[LLMTip] = Field(max_length=MAX_TIPS)
