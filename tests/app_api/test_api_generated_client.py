"""The OpenAPI schema is complete enough for a generated client: ``openapi-python-client`` (a
widely used generator, run at its defaults without its formatting hooks) builds a typed Python
client from ``/openapi.json``, and that client signs up, sets a profile and a consent, gets a tip,
reacts to it, exports and erases, with every answer parsed into the generated models."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient

from app_api.main import create_app
from app_api.services import Services

pytestmark = pytest.mark.slow

PACKAGE = "oo_generated_client"


@pytest.fixture
def generated(services: Services, tmp_path: Path) -> Iterator[ModuleType]:
    """The client generated from the app's schema, imported."""
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(create_app(services).openapi()))
    config = tmp_path / "config.yaml"
    config.write_text(f"post_hooks: []\nproject_name_override: {PACKAGE}\npackage_name_override: {PACKAGE}\n")
    generator = Path(sys.executable).parent / "openapi-python-client"
    args = ["generate", "--path", str(schema), "--config", str(config), "--meta", "none"]
    done = subprocess.run(
        [str(generator), *args, "--output-path", str(tmp_path / PACKAGE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr  # every schema part understood
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def call(module: str, client: object, **kwargs: object) -> object:
    """``sync_detailed`` of one generated operation module: the parsed answer, or a failure with
    the status and body."""
    response = importlib.import_module(f"{PACKAGE}.api.{module}").sync_detailed(client=client, **kwargs)
    assert 200 <= response.status_code < 300, (response.status_code, response.content[:300])
    return response.parsed


def test_a_generated_client_walks_the_users_path(generated: ModuleType, client: TestClient) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    anonymous = generated.Client(base_url="http://testserver").set_httpx_client(client)
    tokens = call(
        "auth.register_v1_auth_register_post",
        anonymous,
        body=models.Register(email="gen@example.org", password="correct horse battery"),
    )
    assert isinstance(tokens, models.TokenPair) and tokens.access_token

    client.headers["Authorization"] = f"Bearer {tokens.access_token}"
    me = generated.AuthenticatedClient(base_url="http://testserver", token=tokens.access_token)
    me.set_httpx_client(client)
    account = call("auth.me_v1_auth_me_get", me)
    assert isinstance(account, models.Account) and account.email == "gen@example.org"

    profile = models.ProfileBody(
        timezone="Europe/Berlin",
        quiet_hours=models.QuietHours(start="22:00", end="07:00"),
        channels=[models.ProfileBodyChannelsItem.EMAIL],
    )
    saved = call("profile.put_profile_v1_me_profile_put", me, body=profile)
    assert isinstance(saved, models.ProfileBody) and saved.timezone == "Europe/Berlin"
    consents = call(
        "profile.change_consent_v1_me_consents_post",
        me,
        body=models.ConsentChange(purpose=models.Purpose.NOTIFICATIONS, granted=True),
    )
    assert isinstance(consents, models.Consents) and consents.current["notifications"] is True

    tip = call("tips.next_tip_v1_tips_next_get", me)
    assert isinstance(tip, models.NextTip) and tip.decision_id
    body = models.FeedbackBody(decision_id=tip.decision_id, reaction=models.Reaction.DONE)
    accepted = call("feedback.submit_v1_feedback_post", me, body=body, idempotency_key=str(uuid.uuid4()))
    assert isinstance(accepted, models.Accepted)

    exported = call("privacy.export_v1_me_export_get", me)
    assert exported.to_dict()["app"]["user"]["email"] == "gen@example.org"
    call("privacy.erase_v1_me_delete", me)
    assert client.get("/v1/auth/me").status_code == 401
