"""One user can never read or change another's data: user B tries each of user A's resources."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app_api.main import create_app
from app_api.services import Services
from app_api.tables import Reaction
from tests.app_api.conftest import Account


def test_every_route_is_either_about_me_or_checked_here(services: Services) -> None:
    # Resources are reached through the caller's token (/v1/me, /v1/tips, ...), never by a user
    # id in the path; a route that takes an id must be added to the checks below. The page's
    # static assets (/page/{name}, four public files) hold no user data.
    app = create_app(services)
    with_path_ids = [r.path for r in app.routes if "{" in getattr(r, "path", "")]
    assert with_path_ids == ["/page/{name}"]


def test_user_b_cannot_touch_user_as_resources(
    client: TestClient, services: Services, alice: Account, bob: Account
) -> None:
    client.put("/v1/me/profile", json={"timezone": "Asia/Tokyo"}, headers=alice.auth)
    client.post("/v1/me/consents", json={"purpose": "llm_tips", "granted": True}, headers=alice.auth)
    client.post("/v1/integrations/todoist", json={"token": "alice-todoist-token"}, headers=alice.auth)
    decision = client.get("/v1/tips/next", headers=alice.auth).json()["decision_id"]
    state = client.get("/v1/integrations/todoist/authorize", headers=alice.auth).json()["state"]

    # Alice's decision: Bob cannot react to it.
    assert (
        client.post("/v1/feedback", json={"decision_id": decision, "reaction": "dismiss"}, headers=bob.auth).status_code
        == 404
    )
    # Alice's OAuth state: Bob cannot complete her Todoist connection with it.
    r = client.post("/v1/integrations/todoist", json={"code": "c", "state": state}, headers=bob.auth)
    assert r.status_code == 400
    # Alice's refresh token: Bob cannot log her out with it, nor use it as his own.
    assert (
        client.post(
            "/v1/auth/logout", json={"refresh_token": alice.tokens["refresh_token"]}, headers=bob.auth
        ).status_code
        == 204
    )
    assert (
        client.post("/v1/auth/refresh", json={"refresh_token": alice.tokens["refresh_token"]})
        .json()
        .get("access_token")
    )
    # Bob's views show nothing of Alice.
    assert client.get("/v1/me/profile", headers=bob.auth).json()["timezone"] == "UTC"
    assert client.get("/v1/me/consents", headers=bob.auth).json()["history"] == []
    assert client.get("/v1/integrations/todoist", headers=bob.auth).json()["status"] == "not_connected"
    assert client.delete("/v1/integrations/todoist", headers=bob.auth).status_code == 404
    export = client.get("/v1/me/export", headers=bob.auth)
    assert alice.id not in export.text and alice.email not in export.text and decision not in export.text
    # Bob erasing himself leaves Alice whole.
    assert client.delete("/v1/me", headers=bob.auth).status_code == 204
    assert client.get("/v1/integrations/todoist", headers=alice.auth).json()["status"] == "active"
    assert (
        client.post("/v1/feedback", json={"decision_id": decision, "reaction": "done"}, headers=alice.auth).status_code
        == 202
    )
    with Session(services.engine) as s:
        assert s.execute(select(func.count()).select_from(Reaction)).scalar_one() == 1
