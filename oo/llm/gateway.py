"""The LLM gateway: a LiteLLM Router over the aliases of one YAML file.

Callers name an alias (``tip-generator``, ``embedder``, ``judge``), never a model: which model
answers, with which timeout, retries and fallbacks, is configuration (``OO_LLM__*`` and the YAML,
see ``oo/llm/models.yaml``). Timeouts, retries and fallbacks are LiteLLM's own Router settings.

Examples
--------
>>> from oo.settings import LLMSettings
>>> config = load_config(LLMSettings())
>>> sorted(d["model_name"] for d in config.model_list)
['embedder', 'judge', 'tip-generator']
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from oo.settings import LLMSettings

log = logging.getLogger(__name__)

ALIASES = ("tip-generator", "embedder", "judge")
"""The aliases code may call; the YAML must define each."""
DEFAULT_CONFIG = Path(__file__).with_name("models.yaml")
CLOUD_KEY = "cloud_api_key"
OLLAMA_PREFIXES = ("ollama/", "ollama_chat/")


class GatewayConfigError(ValueError):
    """The aliases' YAML is missing, unreadable or incomplete."""


class LLMCallError(RuntimeError):
    """A call failed after LiteLLM's retries and fallbacks (the cause is chained)."""


@dataclass(frozen=True)
class RouterConfig:
    """What the Router is built from: LiteLLM's ``model_list`` and Router keyword arguments."""

    model_list: list[dict[str, Any]]
    router_settings: dict[str, Any] = field(default_factory=dict)
    source: Path = DEFAULT_CONFIG

    def models(self, alias: str) -> list[str]:
        """The models deployed under ``alias``, in the YAML's order."""
        return [d["litellm_params"]["model"] for d in self.model_list if d["model_name"] == alias]


@dataclass(frozen=True)
class Completion:
    """A chat answer and the model (``provider/name``) that wrote it, after any fallback."""

    text: str
    model: str


@dataclass(frozen=True)
class Embeddings:
    """One vector per input text and the model that computed them."""

    vectors: list[list[float]]
    model: str


def load_config(settings: LLMSettings) -> RouterConfig:
    """Read the YAML and resolve it against ``settings``: cloud deployments only with a key,
    Ollama's base URL, fallbacks to absent aliases pruned."""
    path = Path(settings.config_path or DEFAULT_CONFIG)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise GatewayConfigError(f"cannot read the LLM aliases file {path}: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("model_list"), list):
        raise GatewayConfigError(f"{path}: expected a mapping with a 'model_list' list")
    key = settings.cloud_api_key.get_secret_value() if settings.cloud_api_key else None
    deployments: list[dict[str, Any]] = []
    for i, entry in enumerate(raw["model_list"]):
        if not (isinstance(entry, dict) and entry.get("model_name") and isinstance(entry.get("litellm_params"), dict)):
            raise GatewayConfigError(f"{path}: model_list[{i}] needs model_name and litellm_params")
        params = dict(entry["litellm_params"])
        if not isinstance(params.get("model"), str):
            raise GatewayConfigError(f"{path}: model_list[{i}] ({entry['model_name']}) has no litellm_params.model")
        requires = entry.get("requires")
        if requires not in (None, CLOUD_KEY):
            raise GatewayConfigError(f"{path}: model_list[{i}] requires {requires!r}; only {CLOUD_KEY!r} is known")
        if requires == CLOUD_KEY:
            if key is None:
                continue
            params["api_key"] = key
            if settings.cloud_api_base:
                params["api_base"] = settings.cloud_api_base
        if params["model"].startswith(OLLAMA_PREFIXES):
            params.setdefault("api_base", settings.ollama_base_url)
        deployments.append({"model_name": str(entry["model_name"]), "litellm_params": params})
    names = {d["model_name"] for d in deployments}
    missing = [a for a in ALIASES if a not in names]
    if missing:
        raise GatewayConfigError(f"{path}: no deployment for the alias(es) {missing}")
    router_settings = dict(raw.get("router_settings") or {})
    for kind in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks"):
        if kind in router_settings:
            router_settings[kind] = _prune(router_settings[kind], names, path)
    return RouterConfig(model_list=deployments, router_settings=router_settings, source=path)


def _prune(fallbacks: Any, names: set[str], path: Path) -> list[dict[str, list[str]]]:
    if not isinstance(fallbacks, list) or not all(isinstance(f, dict) for f in fallbacks):
        raise GatewayConfigError(f"{path}: fallbacks must be a list of {{alias: [alias, ...]}}")
    out = []
    for rule in fallbacks:
        for alias, targets in rule.items():
            kept = [t for t in targets if t in names]
            if alias in names and kept:
                out.append({alias: kept})
    return out


class LLMGateway:
    """A LiteLLM Router over the configured aliases, with the offline provider registered.

    Parameters
    ----------
    settings
        The ``OO_LLM__*`` group: YAML path, timeout, retries, Ollama URL, cloud key.
    """

    def __init__(self, settings: LLMSettings) -> None:
        import litellm
        from litellm.router import Router

        from oo.llm import offline

        offline.register()
        litellm.suppress_debug_info = True
        self.settings = settings
        self.config = load_config(settings)
        router_kwargs = {
            **self.config.router_settings,
            "timeout": settings.timeout_s,
            "num_retries": settings.num_retries,
        }
        self.router = Router(model_list=self.config.model_list, **router_kwargs)
        if f"{offline.PROVIDER}/{offline.EMBED_MODEL}" in self.config.models("embedder"):
            offline.hash_embed(["warm up"])  # imports scikit-learn now rather than in a request
        log.info(
            "LLM gateway from %s: %s",
            self.config.source,
            ", ".join(f"{a}={self.config.models(a)}" for a in ALIASES),
        )

    async def complete(
        self,
        alias: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        response_format: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Completion:
        """One chat completion through ``alias`` (retries, fallbacks and timeout from the settings).

        Raises :class:`LLMCallError` when every deployment failed.
        """
        extra: dict[str, Any] = dict(kwargs)
        if response_format is not None:
            extra["response_format"] = dict(response_format)
        try:
            chat: Any = [dict(m) for m in messages]
            response: Any = await self.router.acompletion(model=alias, messages=chat, **extra)
        except Exception as exc:  # LiteLLM raises many types (mapped provider errors, timeouts): one for callers
            raise LLMCallError(f"{alias}: {type(exc).__name__}: {exc}") from exc
        try:
            text = response.choices[0].message.content
        except (AttributeError, IndexError) as exc:
            raise LLMCallError(f"{alias}: an answer without a message: {response!r:.200}") from exc
        return Completion(text="" if text is None else str(text), model=self._resolved(response, alias))

    async def embed(self, texts: Sequence[str], alias: str = "embedder", **kwargs: Any) -> Embeddings:
        """Embed ``texts`` through ``alias`` in one call; raises :class:`LLMCallError` on failure."""
        if not texts:
            return Embeddings(vectors=[], model=self.config.models(alias)[0])
        try:
            response: Any = await self.router.aembedding(model=alias, input=list(texts), **kwargs)
        except Exception as exc:  # LiteLLM raises many types (mapped provider errors, timeouts): one for callers
            raise LLMCallError(f"{alias}: {type(exc).__name__}: {exc}") from exc
        try:
            vectors = [[float(v) for v in item["embedding"]] for item in response.data]
        except (KeyError, TypeError, ValueError) as exc:
            raise LLMCallError(f"{alias}: embeddings that are not lists of numbers") from exc
        if len(vectors) != len(texts):
            raise LLMCallError(f"{alias}: {len(vectors)} embeddings for {len(texts)} texts")
        return Embeddings(vectors=vectors, model=self._resolved(response, alias))

    def _resolved(self, response: Any, alias: str) -> str:
        """The deployment's model (``provider/name``) that answered, after any fallback."""
        hidden = getattr(response, "_hidden_params", None) or {}
        return str(hidden.get("litellm_model_name") or self.config.models(alias)[0])
