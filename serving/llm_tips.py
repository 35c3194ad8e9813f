"""The LLM pool's parts that hold no I/O: parsing an answer against the tip contract, the bounded
per-user memories (recent tips, generated tips) and near-duplicate detection over embeddings."""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import numpy as np
from prometheus_client import Counter
from pydantic import ValidationError

from data_contracts import CandidateKind, TipCandidate
from data_contracts.llm_tips import LLMTip

TIPS_DROPPED = Counter("oo_llm_tips_dropped", "LLM tips dropped before serving, by reason", ["reason"])
"""``reason`` = ``malformed`` (broke the tip contract) or ``duplicate`` (repeats a recent tip)."""

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)

K = TypeVar("K")
V = TypeVar("V")


def parse_tips(text: str, limit: int) -> tuple[list[LLMTip], int]:
    """The valid tips of an answer (at most ``limit``) and how many were malformed.

    An answer that is not a JSON object with a ``tips`` list counts as one malformed tip; every
    item of the list that breaks :class:`LLMTip` counts as one. A Markdown code fence around the
    JSON is tolerated (small local models add one).

    Examples
    --------
    >>> parse_tips('{"tips": [{"content": "Drink water", "minutes": 1, "rationale": ""}, {"content": ""}]}', 3)
    ([LLMTip(content='Drink water', minutes=1, rationale='')], 1)
    >>> parse_tips("Sure! Here are tips", 3)
    ([], 1)
    """
    fenced = _FENCE.match(text)
    try:
        data: Any = json.loads(fenced.group(1) if fenced else text)
    except json.JSONDecodeError:
        return [], 1
    items = data.get("tips") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return [], 1
    tips: list[LLMTip] = []
    malformed = 0
    for item in items:
        if len(tips) >= limit:
            break
        try:
            tips.append(LLMTip.model_validate(item))
        except ValidationError:
            malformed += 1
    return tips, malformed


def tip_id(user_id: str, prompt_version: str, content: str) -> str:
    """A stable candidate id for one tip text shown to one user.

    Examples
    --------
    >>> tip_id("u1", "tips-v1", "Drink water") == tip_id("u1", "tips-v1", "Drink water")
    True
    """
    digest = hashlib.blake2b(f"{user_id}\n{prompt_version}\n{content}".encode(), digest_size=8).hexdigest()
    return f"llm:{digest}"


def tip_candidate(
    user_id: str, tip: LLMTip, *, model: str, prompt_version: str, features: dict[str, float]
) -> TipCandidate:
    """The candidate of one validated tip."""
    return TipCandidate(
        candidate_id=tip_id(user_id, prompt_version, tip.content),
        content=tip.content,
        kind=CandidateKind.llm_tip,
        source="tip-generator",
        llm_model=model,
        prompt_version=prompt_version,
        features=features,
    )


def repeats(new: Sequence[Sequence[float]], recent: Sequence[Sequence[float]], threshold: float) -> list[bool]:
    """For each new vector, whether its cosine similarity to a recent one, or to an earlier new
    one that is kept, reaches ``threshold`` (a zero vector repeats nothing).

    Examples
    --------
    >>> repeats([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, 0.0]], [[1.0, 0.1]], 0.9)
    [True, False, True, False]
    """
    if not new:
        return []
    vectors = np.asarray([*recent, *new], dtype=float)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    similar = unit @ unit.T >= threshold
    kept = list(range(len(recent)))
    out = []
    for i in range(len(recent), len(vectors)):
        dup = bool(similar[i, kept].any()) if kept else False
        out.append(dup)
        if not dup:
            kept.append(i)
    return out


class BoundedLRU(OrderedDict[K, V], Generic[K, V]):
    """A dict that forgets its least recently used keys beyond ``maxsize``.

    A dozen lines here rather than cachetools, which is only a transitive dependency.

    Examples
    --------
    >>> lru = BoundedLRU[str, int](2)
    >>> lru["a"], lru["b"] = 1, 2
    >>> _ = lru.get("a"); lru["c"] = 3
    >>> sorted(lru)
    ['a', 'c']
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize

    def get(self, key: K, default: Any = None) -> Any:
        """The value of ``key`` (marked as just used), else ``default``."""
        if key not in self:
            return default
        self.move_to_end(key)
        return self[key]

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)


@dataclass
class RecentTips:
    """The tips each user was served or offered lately: ``per_user`` texts within ``window``,
    for at most ``max_users`` users (in memory, per process)."""

    window: timedelta
    per_user: int
    max_users: int
    _users: BoundedLRU[str, deque[tuple[datetime, str]]] = field(init=False)

    def __post_init__(self) -> None:
        self._users = BoundedLRU(self.max_users)

    def texts(self, user_id: str, now: datetime) -> list[str]:
        """The user's tips of the last ``window`` before ``now``, newest last."""
        tips = self._users.get(user_id) or ()
        return [text for at, text in tips if now - self.window <= at <= now]

    def remember(self, user_id: str, texts: Sequence[str], at: datetime) -> None:
        """Add ``texts`` as offered to ``user_id`` at ``at``."""
        tips = self._users.get(user_id)
        if tips is None:
            tips = deque(maxlen=self.per_user)
            self._users[user_id] = tips
        tips.extend((at, t) for t in texts)
