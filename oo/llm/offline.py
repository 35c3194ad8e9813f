"""The offline provider ``oo-offline``, registered with LiteLLM's custom provider mechanism, so the
gateway's aliases work with no model server (the default of ``oo/llm/models.yaml``).

Its models say what they are:

- ``oo-offline/template-tip-generator`` writes tips from fixed templates over the user's context
  (time of day, reaction rates, open tasks), deterministic for a given prompt. No language model.
- ``oo-offline/hash-embedder`` embeds text by hashing character n-grams (scikit-learn's
  ``HashingVectorizer``): it catches near-verbatim repeats, not paraphrases.
- ``oo-offline/rule-judge`` scores a tip by fixed rules (length, duration, an imperative start).

Point the aliases at Ollama (``models.ollama.yaml``) for real generation and embeddings.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import litellm
from litellm.llms.custom_llm import CustomLLM, CustomLLMError
from litellm.types.utils import EmbeddingResponse, ModelResponse

from data_contracts.llm_tips import LLMTip, TipBatch
from oo.llm.prompts import TipRequest, parse_request

PROVIDER = "oo-offline"
TIP_MODEL = "template-tip-generator"
EMBED_MODEL = "hash-embedder"
JUDGE_MODEL = "rule-judge"
EMBED_DIMENSIONS = 1024

Rule = Callable[[Mapping[str, float]], bool]


def _hour(c: Mapping[str, float]) -> float:
    return c.get("hour_of_day", 12.0)


# (when it applies, tip, minutes, rationale); "{task}" is filled with one of the open tasks.
TEMPLATES: tuple[tuple[Rule, str, int, str], ...] = (
    (lambda c: 5 <= _hour(c) < 11, "Write the one task that would make today good on a sticky note", 2, "morning"),
    (lambda c: 5 <= _hour(c) < 11, "Drink a glass of water before you open your inbox", 1, "morning"),
    (lambda c: 11 <= _hour(c) < 17, "Take a 5-minute walk without your phone", 5, "afternoon dip"),
    (lambda c: 11 <= _hour(c) < 17, "Close every browser tab you will not need this afternoon", 3, "afternoon"),
    (lambda c: 17 <= _hour(c) < 23, "Lay out what you need for tomorrow's first task", 5, "evening"),
    (lambda c: 17 <= _hour(c) < 23, "Write down three things you finished today", 3, "evening"),
    (
        lambda c: _hour(c) >= 23 or _hour(c) < 5,
        "Put your phone in another room and note one thing for tomorrow",
        2,
        "late",
    ),
    (
        lambda c: c.get("done_rate_7d", 0.0) < 0.3,
        "Pick the smallest thing on your list and finish it now",
        10,
        "momentum",
    ),
    (
        lambda c: c.get("done_rate_7d", 0.0) >= 0.6,
        "Block 25 minutes in your calendar for your hardest task",
        2,
        "on a roll",
    ),
    (
        lambda c: c.get("hours_since_last_reaction", 720.0) > 48,
        "Spend two minutes deciding what matters this week",
        2,
        "away",
    ),
    (lambda c: c.get("completions_per_day_28d", 0.0) > 3, "Take a 10-minute break before the next task", 10, "busy"),
    (lambda c: True, "Clear your desk for five minutes", 5, "any time"),
    (lambda c: True, "Reply to one message you have been putting off", 5, "any time"),
    (lambda c: True, "Stand up and stretch for two minutes", 2, "any time"),
    (lambda c: True, "Write down the three things on your mind right now", 3, "any time"),
)
TASK_TEMPLATES: tuple[tuple[str, int, str], ...] = (
    ("Spend 10 minutes on the first step of '{task}'", 10, "an open task"),
    ("Write down what is blocking '{task}'", 3, "an open task"),
    ("Decide today whether '{task}' still matters, or delete it", 2, "an open task"),
)


def write_tips(request: TipRequest) -> TipBatch:
    """Up to ``request.n`` tips from the templates that fit the context, none listed in ``avoid``;
    the same request always gets the same tips."""
    seed = int.from_bytes(hashlib.sha256(request.model_dump_json().encode()).digest()[:8], "big")
    rng = random.Random(seed)
    avoid = {a.casefold() for a in request.avoid}
    pool = [(t, m, r) for rule, t, m, r in TEMPLATES if rule(request.context)]
    for task in request.tasks[:3]:
        pool += [(t.format(task=task[:80]), m, r) for t, m, r in TASK_TEMPLATES]
    fresh = [p for p in pool if p[0].casefold() not in avoid]
    rng.shuffle(fresh)
    return TipBatch(tips=[LLMTip(content=t, minutes=m, rationale=r) for t, m, r in fresh[: request.n]])


def judge_tip(tip: str) -> dict[str, Any]:
    """A rule score in [0, 1] of one tip, with the rules it failed."""
    failed = []
    if not 3 <= len(tip) <= 120:
        failed.append("length")
    if tip[:1].islower() or tip.endswith("?"):
        failed.append("not an imperative sentence")
    if any(w in tip.casefold() for w in ("always", "never", "every day")):
        failed.append("not a small step")
    return {"score": 1.0 - len(failed) / 3, "failed": failed}


@lru_cache(maxsize=1)
def _vectorizer() -> Any:
    # scikit-learn's hashing trick rather than our own hashing code: stateless, well tested.
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(
        preprocessor=_words,
        analyzer="char_wb",
        ngram_range=(3, 4),
        n_features=EMBED_DIMENSIONS,
        alternate_sign=False,
        norm="l2",
    )


def _words(text: str) -> str:
    """Case-folded words separated by single spaces ("5-minute" and "5 minute" read the same)."""
    return re.sub(r"\W+", " ", text.casefold()).strip()


def hash_embed(texts: Sequence[str]) -> list[list[float]]:
    """Unit vectors of hashed character 3- and 4-grams of the words: cosine = dot product.

    Examples
    --------
    >>> a, b, c = hash_embed(["Take a 5-minute walk", "take a 5 minute walk!", "Call mum"])
    >>> round(sum(x * y for x, y in zip(a, b)), 6), round(sum(x * y for x, y in zip(a, c)), 6)
    (1.0, 0.0)
    """
    matrix = _vectorizer().transform(list(texts)).toarray()
    return [[float(v) for v in row] for row in matrix]


def _text(messages: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")


def _error(status_code: int, message: str) -> Exception:
    """The error type LiteLLM maps to its own exceptions (400 bad request, 404 not found...)."""
    return CustomLLMError(status_code=status_code, message=message)  # type: ignore[no-untyped-call]


class OfflineProvider(CustomLLM):
    """LiteLLM handler of every ``oo-offline/...`` model (LiteLLM strips the prefix)."""

    def completion(self, model: str, messages: list[Any], *args: Any, **kwargs: Any) -> ModelResponse:
        """Answer a chat completion with the template generator or the rule judge."""
        if model == TIP_MODEL:
            try:
                request = parse_request(messages)
            except ValueError as exc:
                raise _error(status_code=400, message=f"{PROVIDER}/{TIP_MODEL}: {exc}") from exc
            content = write_tips(request).model_dump_json()
        elif model == JUDGE_MODEL:
            content = json.dumps(judge_tip(_text(messages).strip()))
        else:
            raise _error(status_code=404, message=f"{PROVIDER} has no chat model {model!r}")
        return ModelResponse(
            model=f"{PROVIDER}/{model}",
            choices=[{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        )

    async def acompletion(self, model: str, messages: list[Any], *args: Any, **kwargs: Any) -> ModelResponse:
        """The same as :meth:`completion` (no I/O)."""
        return self.completion(model, messages)

    def embedding(
        self, model: str, input: list[Any], model_response: EmbeddingResponse, *args: Any, **kwargs: Any
    ) -> EmbeddingResponse:
        """Hash-embed every input text."""
        if model != EMBED_MODEL:
            raise _error(status_code=404, message=f"{PROVIDER} has no embedding model {model!r}")
        vectors = hash_embed([str(t) for t in input])
        model_response.data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        model_response.model = f"{PROVIDER}/{model}"
        return model_response

    async def aembedding(
        self, model: str, input: list[Any], model_response: EmbeddingResponse, *args: Any, **kwargs: Any
    ) -> EmbeddingResponse:
        """The same as :meth:`embedding` (no I/O)."""
        return self.embedding(model, input, model_response)


def register() -> None:
    """Register the ``oo-offline`` provider with LiteLLM (once per process)."""
    from litellm.utils import custom_llm_setup

    if not any(p.get("provider") == PROVIDER for p in litellm.custom_provider_map):
        litellm.custom_provider_map = [
            *litellm.custom_provider_map,
            {"provider": PROVIDER, "custom_handler": OfflineProvider()},
        ]
    custom_llm_setup()  # type: ignore[no-untyped-call]
