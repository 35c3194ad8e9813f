"""The LLM gateway: aliases from one YAML, the offline provider through LiteLLM's Router, and the
real HTTP path (LiteLLM's ``openai/...`` provider) against the local fake OpenAI server, with its
faults: timeouts, 500s (retried, then the fallback alias), malformed and garbage answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from data_contracts.llm_tips import TipBatch
from oo.fakes.openai import GARBAGE, MALFORMED, FakeOpenAI, serve_in_thread
from oo.llm.gateway import ALIASES, GatewayConfigError, LLMCallError, LLMGateway, load_config
from oo.llm.prompts import UnknownPrompt, parse_request, response_format, tip_messages
from oo.settings import LLMSettings

pytestmark = pytest.mark.filterwarnings(
    # LiteLLM's logging worker is bound to the loop of its first call; each test runs its own loop
    "ignore:coroutine 'Logging.async_success_handler' was never awaited:RuntimeWarning"
)

OLLAMA_YAML = Path(__file__).parents[2] / "oo" / "llm" / "models.ollama.yaml"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def write_config(tmp_path: Path, model_list: list[dict[str, Any]], **router_settings: Any) -> Path:
    """An aliases file with the offline embedder and judge unless ``model_list`` names them."""
    names = {d["model_name"] for d in model_list}
    defaults = {"embedder": "oo-offline/hash-embedder", "judge": "oo-offline/rule-judge"}
    full = model_list + [
        {"model_name": a, "litellm_params": {"model": m}} for a, m in defaults.items() if a not in names
    ]
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"model_list": full, "router_settings": router_settings}))
    return path


def openai_at(base: str, model: str = "gpt-fake") -> dict[str, Any]:
    return {"model": f"openai/{model}", "api_base": base, "api_key": "sk-fake"}


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI()
    with serve_in_thread(fake) as base:
        yield fake, base


@pytest.fixture
def fake(fake_server: tuple[FakeOpenAI, str]) -> FakeOpenAI:
    server = fake_server[0]
    server.mode, server.tips, server.delay_s = "ok", None, 2.0
    server.requests.clear()
    return server


@pytest.fixture
def base(fake_server: tuple[FakeOpenAI, str]) -> str:
    return fake_server[1]


MESSAGES = tip_messages("tips-v1", 3, {"hour_of_day": 8.5, "done_rate_7d": 0.1}, ["Renew passport", "Call mum"])


# -- configuration -------------------------------------------------------------------------------
def test_the_default_aliases_are_the_offline_provider_and_their_names_say_what_they_are() -> None:
    config = load_config(LLMSettings())
    assert {a: config.models(a) for a in ALIASES} == {
        "tip-generator": ["oo-offline/template-tip-generator"],
        "embedder": ["oo-offline/hash-embedder"],
        "judge": ["oo-offline/rule-judge"],
    }


def test_ollama_gets_the_base_url_from_settings_and_the_cloud_fallback_needs_its_key() -> None:
    without = load_config(LLMSettings(config_path=OLLAMA_YAML, ollama_base_url="http://gpu-box:11434"))
    assert without.models("tip-generator") == ["ollama_chat/llama3.2:3b"]
    assert without.models("tip-generator-cloud") == []
    params = {d["model_name"]: d["litellm_params"] for d in without.model_list}
    assert params["tip-generator"]["api_base"] == params["embedder"]["api_base"] == "http://gpu-box:11434"
    assert {"tip-generator": ["tip-generator-offline"]} in without.router_settings["fallbacks"]

    key = LLMSettings(config_path=OLLAMA_YAML, cloud_api_key=SecretStr("sk-real"), cloud_api_base="http://cloud/v1")
    with_key = load_config(key)
    cloud = next(d["litellm_params"] for d in with_key.model_list if d["model_name"] == "tip-generator-cloud")
    assert cloud == {"model": "openai/gpt-4o-mini", "api_key": "sk-real", "api_base": "http://cloud/v1"}
    assert {"tip-generator": ["tip-generator-cloud", "tip-generator-offline"]} in with_key.router_settings["fallbacks"]


def test_a_config_without_an_alias_or_unreadable_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"model_list": [{"model_name": "embedder", "litellm_params": {"model": "x/y"}}]}))
    with pytest.raises(GatewayConfigError, match=r"no deployment for the alias\(es\) \['tip-generator', 'judge'\]"):
        load_config(LLMSettings(config_path=path))
    path.write_text("model_list: [unclosed")
    with pytest.raises(GatewayConfigError, match=str(path)):
        load_config(LLMSettings(config_path=path))
    with pytest.raises(GatewayConfigError, match="cannot read"):
        load_config(LLMSettings(config_path=tmp_path / "absent.yaml"))


def test_swapping_a_model_is_configuration(tmp_path: Path) -> None:
    # a deployment's litellm_params go to LiteLLM as they are: here LiteLLM's mock_response (no network)
    mocked = {"model": "openai/gpt-4o-mini", "api_key": "sk-none", "mock_response": '{"tips": []}'}
    path = write_config(tmp_path, [{"model_name": "tip-generator", "litellm_params": mocked}])
    answer = run(LLMGateway(LLMSettings(config_path=path)).complete("tip-generator", MESSAGES))
    assert (answer.text, answer.model) == ('{"tips": []}', "openai/gpt-4o-mini")


def test_llm_settings_come_from_oo_llm_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from oo.settings import Settings

    monkeypatch.setenv("OO_LLM__DEADLINE_MS", "120")
    monkeypatch.setenv("OO_LLM__CLOUD_API_KEY", "sk-secret")
    monkeypatch.setenv("OO_LLM__CONFIG_PATH", str(OLLAMA_YAML))
    llm = Settings().llm
    assert (llm.deadline_ms, llm.config_path, llm.cloud_api_key is not None) == (120.0, OLLAMA_YAML, True)
    assert "sk-secret" not in repr(llm) and llm.cloud_api_key.get_secret_value() == "sk-secret"  # type: ignore[union-attr]


def test_unknown_prompt_versions_are_refused() -> None:
    with pytest.raises(UnknownPrompt, match="tips-v0"):
        tip_messages("tips-v0", 3)


# -- the offline provider through the Router -----------------------------------------------------
def test_the_template_generator_writes_valid_tips_over_the_context_deterministically() -> None:
    gateway = LLMGateway(LLMSettings())
    answer = run(gateway.complete("tip-generator", MESSAGES, response_format=response_format()))
    assert answer.model == "oo-offline/template-tip-generator"
    tips = [t.content for t in TipBatch.model_validate_json(answer.text).tips]
    assert len(tips) == 3 == len(set(tips))
    # what the templates may say at 08:30 with few tasks done, about these tasks
    allowed = {
        "Write the one task that would make today good on a sticky note",
        "Drink a glass of water before you open your inbox",
        "Pick the smallest thing on your list and finish it now",
        "Spend two minutes deciding what matters this week",
        "Clear your desk for five minutes",
        "Reply to one message you have been putting off",
        "Stand up and stretch for two minutes",
        "Write down the three things on your mind right now",
    } | {
        t.format(task=task)
        for task in ("Renew passport", "Call mum")
        for t in (
            "Spend 10 minutes on the first step of '{task}'",
            "Write down what is blocking '{task}'",
            "Decide today whether '{task}' still matters, or delete it",
        )
    }
    assert set(tips) <= allowed
    again = run(gateway.complete("tip-generator", MESSAGES, response_format=response_format()))
    assert again.text == answer.text
    avoid = tip_messages("tips-v1", 3, parse_request(MESSAGES).context, ["Renew passport", "Call mum"], tips)
    fresh = TipBatch.model_validate_json(run(gateway.complete("tip-generator", avoid)).text).tips
    assert not {t.content for t in fresh} & set(tips)


def test_the_template_generator_refuses_a_chat_that_is_not_a_tip_prompt() -> None:
    with pytest.raises(LLMCallError, match="REQUEST"):
        run(LLMGateway(LLMSettings()).complete("tip-generator", [{"role": "user", "content": "hello"}]))


def test_the_hash_embedder_sees_near_verbatim_repeats_and_nothing_more() -> None:
    gateway = LLMGateway(LLMSettings())
    texts = ["Take a 5-minute walk", "take a 5 minute walk!", "Take a 10-minute break before the next task"]
    got = run(gateway.embed(texts))
    assert got.model == "oo-offline/hash-embedder"
    a, b, c = got.vectors

    def cos(u: list[float], v: list[float]) -> float:
        return sum(x * y for x, y in zip(u, v, strict=True))

    threshold = LLMSettings().duplicate_similarity
    assert cos(a, b) >= threshold > cos(a, c)


def test_the_rule_judge_answers_json() -> None:
    gateway = LLMGateway(LLMSettings())
    good = json.loads(run(gateway.complete("judge", [{"role": "user", "content": "Drink a glass of water"}])).text)
    bad = json.loads(run(gateway.complete("judge", [{"role": "user", "content": "always be productive?"}])).text)
    assert good == {"score": 1.0, "failed": []}
    assert bad["score"] < good["score"] and "not a small step" in bad["failed"]


def test_mock_response_needs_no_server() -> None:
    answer = run(LLMGateway(LLMSettings()).complete("tip-generator", MESSAGES, mock_response='{"tips": []}'))
    assert answer.text == '{"tips": []}'


# -- the real HTTP path: LiteLLM's openai provider against the fake server ------------------------
def test_through_litellm_over_http_the_fake_answers_tips(tmp_path: Path, fake: FakeOpenAI, base: str) -> None:
    path = write_config(tmp_path, [{"model_name": "tip-generator", "litellm_params": openai_at(base)}])
    answer = run(
        LLMGateway(LLMSettings(config_path=path)).complete("tip-generator", MESSAGES, response_format=response_format())
    )
    assert answer.model == "openai/gpt-fake"
    assert len(TipBatch.model_validate_json(answer.text).tips) == 3
    assert fake.requests["chat"] == 1


def test_a_500_is_retried_as_configured_then_falls_back(tmp_path: Path, fake: FakeOpenAI, base: str) -> None:
    fake.mode = "error"
    path = write_config(
        tmp_path,
        [
            {"model_name": "tip-generator", "litellm_params": openai_at(base)},
            {"model_name": "tip-generator-offline", "litellm_params": {"model": "oo-offline/template-tip-generator"}},
        ],
        fallbacks=[{"tip-generator": ["tip-generator-offline"]}],
    )
    answer = run(LLMGateway(LLMSettings(config_path=path, num_retries=1)).complete("tip-generator", MESSAGES))
    assert answer.model == "oo-offline/template-tip-generator"
    assert TipBatch.model_validate_json(answer.text).tips
    assert fake.requests["chat"] == 2  # the call and its one retry


def test_without_a_fallback_a_500_is_an_llm_call_error(tmp_path: Path, fake: FakeOpenAI, base: str) -> None:
    fake.mode = "error"
    path = write_config(tmp_path, [{"model_name": "tip-generator", "litellm_params": openai_at(base)}])
    with pytest.raises(LLMCallError, match="tip-generator"):
        run(LLMGateway(LLMSettings(config_path=path, num_retries=0)).complete("tip-generator", MESSAGES))
    assert fake.requests["chat"] == 1


def test_a_slow_server_times_out_then_falls_back(tmp_path: Path, fake: FakeOpenAI, base: str) -> None:
    fake.mode, fake.delay_s = "slow", 1.5
    path = write_config(
        tmp_path,
        [
            {"model_name": "tip-generator", "litellm_params": openai_at(base)},
            {"model_name": "offline", "litellm_params": {"model": "oo-offline/template-tip-generator"}},
        ],
        fallbacks=[{"tip-generator": ["offline"]}],
    )
    settings = LLMSettings(config_path=path, timeout_s=0.2, num_retries=0)
    answer = run(LLMGateway(settings).complete("tip-generator", MESSAGES))
    assert answer.model == "oo-offline/template-tip-generator"
    nofallback = write_config(tmp_path, [{"model_name": "tip-generator", "litellm_params": openai_at(base)}])
    with pytest.raises(LLMCallError, match="Timeout"):
        run(LLMGateway(settings.model_copy(update={"config_path": nofallback})).complete("tip-generator", MESSAGES))


@pytest.mark.parametrize(("mode", "text"), [("malformed", MALFORMED), ("garbage", GARBAGE)])
def test_malformed_and_garbage_answers_reach_the_caller_as_text(
    tmp_path: Path, fake: FakeOpenAI, base: str, mode: Any, text: str
) -> None:
    # the gateway does not judge content: the candidate pool validates it against the tip contract
    fake.mode = mode
    path = write_config(tmp_path, [{"model_name": "tip-generator", "litellm_params": openai_at(base)}])
    answer = run(
        LLMGateway(LLMSettings(config_path=path)).complete("tip-generator", MESSAGES, response_format=response_format())
    )
    assert answer.text == text


def test_embeddings_over_http_and_a_short_answer_is_an_error(tmp_path: Path, fake: FakeOpenAI, base: str) -> None:
    path = write_config(
        tmp_path,
        [
            {"model_name": "tip-generator", "litellm_params": {"model": "oo-offline/template-tip-generator"}},
            {"model_name": "embedder", "litellm_params": openai_at(base, "embed-fake")},
        ],
    )
    gateway = LLMGateway(LLMSettings(config_path=path))
    got = run(gateway.embed(["Take a 5-minute walk", "Call mum"]))
    assert got.model == "openai/embed-fake" and len(got.vectors) == 2 and len(got.vectors[0]) == 1024
    fake.mode = "malformed"
    with pytest.raises(LLMCallError, match="1 embeddings for 2 texts"):
        run(gateway.embed(["Take a 5-minute walk", "Call mum"]))
