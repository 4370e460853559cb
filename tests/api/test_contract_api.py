"""The REST API keeps the contract of its own OpenAPI schema (schemathesis).

Every operation in /api/openapi.json, as a running server serves it, gets
requests generated from the schema (bodies, path, query and header
parameters; valid and invalid), and every answer must pass
`not_a_server_error` and `response_schema_conformance`: no 5xx, and a status,
content type and body the schema documents for that operation. The server's
log must hold no error either.

The server is the API app (`build()`) with the event service, under uvicorn in
a process of its own, on this session's database and Redis. Marked `postgres`:
`scripts/dev.py test` runs it again against PostgreSQL.

Generated ids would almost never name a row, so about half the cases get real
ones instead (see `Contract.prepare`): the success answers are checked too.
Deterministic (a fixed seed); `FICTURES_CONTRACT_EXAMPLES` sets how many
fuzzed cases per operation (default 10), on top of schemathesis's coverage
cases (boundary and invalid values of every parameter and field).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import free_port
from tests.factories import PASSWORD, _issue_token, unique

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("FICTURES_CONTRACT_EXAMPLES", "10"))
# The two the contract is about, and two that keep the schema complete: every
# status and content type answered is one the schema documents for the operation.
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
_ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback \(most recent call last\)")


@pytest.fixture(scope="module")
def contract_server(database, tmp_path_factory) -> str:
    port = free_port()
    log = tmp_path_factory.mktemp("contract") / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "tests.api.contract_app:app",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"the API server exited:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/api/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the API server was not ready:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    errors = [line for line in log.read_text().splitlines() if _ERROR_LINE.search(line)]
    assert not errors, "the API server logged errors:\n" + "\n".join(errors[:20])


@dataclass
class Account:
    id: int
    username: str
    token: str


@dataclass
class Contract:
    """Real rows for generated cases to name, made through the API."""

    url: str
    http: httpx.Client
    user: Account
    other: Account
    story_id: int = 0  # a published story, the other account's
    made: dict[str, int] = field(default_factory=dict)

    def _as(self, account: Account) -> dict[str, str]:
        return {"Authorization": f"Bearer {account.token}"}

    def _story(self, author: Account) -> int:
        r = self.http.post("/api/stories", headers=self._as(author),
                           json={"title": unique("Contract"), "genre": "mystery", "summary": "s",
                                 "content": "c", "status": "published"})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def _post(self, story_id: int, account: Account) -> int:
        r = self.http.post(f"/api/stories/{story_id}/posts", headers=self._as(account),
                           json={"title": unique("Post"), "body": "b"})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def _notification(self) -> int:
        self._post(self._story(self.user), self.other)  # the story's author hears of it
        r = self.http.get("/api/notifications", params={"limit": 1}, headers=self._as(self.user))
        return r.json()["items"][0]["id"]

    def prepare(self, case) -> None:
        """Send the case as the user; swap about half its generated ids for real ones
        (a fresh row where the operation changes or deletes it)."""
        headers = dict(case.headers or {})
        headers["Authorization"] = f"Bearer {self.user.token}"
        if (case.method.upper(), case.path) == ("DELETE", "/api/auth/token"):
            # Logging out spends the token: a fresh one each time.
            token = _issue_token(self.user.id)
            headers["Authorization"] = f"Bearer {token}"
        case.headers = headers
        params = case.path_parameters or {}
        for name, make in (
            ("story_id", lambda: self.story_id if case.method.upper() == "GET" else self._story(self.user)),
            ("post_id", lambda: self._post(self.story_id, self.user)),
            ("notification_id", self._notification),
        ):
            value = params.get(name)
            if isinstance(value, int) and value % 2 == 1:
                params[name] = make()
                self.made[name] = self.made.get(name, 0) + 1


@pytest.fixture(scope="module")
def contract(contract_server):
    with httpx.Client(base_url=contract_server, timeout=10) as http:
        accounts = []
        for _ in range(2):
            username = unique("contract")
            r = http.post("/api/auth/register", json={"username": username, "password": PASSWORD})
            assert r.status_code == 201, r.text
            user_id = r.json()["id"]
            accounts.append(Account(user_id, username, _issue_token(user_id)))
        found = Contract(contract_server, http, *accounts)
        # Read by the cases, never changed: the other account's (the cases act as the user).
        found.story_id = found._story(found.other)
        for _ in range(3):
            found._post(found.story_id, found.other)
        yield found
    # The real rows were used: the success answers were checked, not only refusals.
    assert set(found.made) == {"story_id", "post_id", "notification_id"}, found.made


def _schema():
    """The app's schema, as built at collection (the test below checks the server
    serves this very schema); the cases are sent to the running server."""
    from fictures.api import build

    config = SchemathesisConfig.from_dict({
        "seed": 20261128,
        "max-stream-events": 1,  # the event stream: its `connected` event is enough
        "request-timeout": 10,
        "generation": {"max-examples": EXAMPLES, "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
    })
    return schemathesis.openapi.from_dict(build().openapi(), config=config)


# Loaded when the module is collected (schemathesis 4.32's fixture-based loader
# reads a node attribute pytest 9 no longer has): one test per operation.
schema = _schema()


@schema.parametrize()
def test_every_operation_keeps_the_contract(case, contract):
    contract.prepare(case)
    response = case.call(base_url=contract.url)
    case.validate_response(response, checks=CHECKS)


def test_the_served_schema_is_the_apps_and_the_docs_page_loads(contract_server):
    from fictures.api import build

    served = httpx.get(f"{contract_server}/api/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == build().openapi()
    docs = httpx.get(f"{contract_server}/api/docs", timeout=10)
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    assert "/api/openapi.json" in docs.text
