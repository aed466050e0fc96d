"""schemathesis against `mentorgym serve`'s /openapi.json: generated requests to every route,
with no token (every answer must be 401: no auth bypass) and with the token (no 5xx, and
bodies that match the documented schemas). Skips without schemathesis (the `openenv` extra,
installed by scripts/test.sh)."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip(
    "schemathesis", reason="schemathesis is not installed (pip install -e '.[openenv]')"
)
from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from mentorgym.env_server import ServeSettings, create_app  # noqa: E402

pytestmark = pytest.mark.slow

TOKEN = "schemathesis-token"
GOOD = {"Authorization": f"Bearer {TOKEN}"}
app = create_app(
    ["mentorgym/Sokoban-v0", "mentorgym/MathTools-v0"],
    ServeSettings(token=TOKEN, max_message_bytes=64 * 1024, step_timeout_s=30),
)
# Not entered as a context manager: the app's lifespan (whose end closes the thread pool)
# is not run, for schemathesis' calls below go through the same app.
schema = schemathesis.openapi.from_dict(TestClient(app, headers=GOOD).get("/openapi.json").json())
schema.app = app  # calls go through the ASGI app in process


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_every_route_needs_the_token_and_never_fails_with_5xx(case):
    anonymous = case.call()
    assert anonymous.status_code == 401, (case.method, case.path, anonymous.status_code)
    wrong = case.call(headers={"X-API-Key": "not-the-token"})
    assert wrong.status_code == 401
    case.call_and_validate(headers=GOOD, checks=[not_a_server_error, response_schema_conformance])
