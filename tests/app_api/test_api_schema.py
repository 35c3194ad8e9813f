"""A bounded schemathesis run over the app's OpenAPI schema: no 5xx and no response that breaks
the schema, for generated valid and invalid requests to every operation, signed in.

Every default check runs except ``positive_data_acceptance``: a request can match the schema and
still be refused for a reason the schema cannot say (an unknown OAuth state is a 400, an email
on a reserved domain such as ``.test`` is a 422 from email-validator), which is correct here.

(schemathesis' ``from_fixture`` does not run on pytest 9, so the operations are driven with
Hypothesis directly: the same strategies and checks, a fixed budget per operation.)"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app_api.main import create_app
from app_api.services import Services
from tests.app_api.conftest import register

pytestmark = pytest.mark.slow

EXAMPLES = 10


@pytest.fixture
def db_url(sqlite_database: str) -> str:  # one backend is enough to fuzz the HTTP surface
    return sqlite_database


def fuzz(strategy: Any, headers: dict[str, str]) -> Any:
    """A Hypothesis test that sends ``EXAMPLES`` cases of ``strategy`` and runs the checks."""

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance], timeout=120)

    return run


def test_the_api_keeps_its_schema(services: Services) -> None:
    app = create_app(services)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    with TestClient(app) as client:
        auth = register(client, "fuzz@example.org").auth
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        anonymous_only = (operation.method.upper(), operation.path) == ("DELETE", "/v1/me")
        headers = {} if anonymous_only else auth  # the fuzzing account must survive the run
        for mode in GenerationMode:
            run = fuzz(operation.as_strategy(generation_mode=mode), headers)
            try:
                run()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # an operation without inputs has no invalid request
