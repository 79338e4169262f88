"""Property-based fuzz of the login service's and the dashboard's OpenAPI schemas
(schemathesis), against a real anvil and a real 3-peer DHT: zero 5xx, and every response
matches the schema it declares (a 422 included: its body never echoes the input).

Bounded: 50 examples per operation (fewer for the argon2-heavy sign-in). Writes carry a valid
API key and the user's orgId so the generated bodies reach the contract instead of stopping
at 401/404.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_headers_conformance,
                                 response_schema_conformance, status_code_conformance)

from tests.fixtures.login import (LoginChain, LoginServiceProc, SignedUpUser, launch_login_service,  # noqa: F401
                                  login_chain, sign_up_user)
from tests.fixtures.web import DashboardProc, WebSwarm, launch_dashboard

pytestmark = [pytest.mark.chain, pytest.mark.slow]

WRITES = {"/api/register-peer", "/api/submit-reward", "/api/submit-winner"}


@pytest.fixture(scope="module")
def fuzz_service(login_chain: LoginChain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoginServiceProc]:
    base: Path = tmp_path_factory.mktemp("login-fuzz")
    # Limits high: the fuzzer is one client hammering; rate limiting has its own tests.
    svc = launch_login_service(base, rpc_url=login_chain.rpc_url, contract_address=login_chain.address,
                               writes_burst=100_000, writes_per_second=1000, signin_burst=100_000,
                               signin_per_minute=1_000_000)
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def fuzz_user(fuzz_service: LoginServiceProc) -> Iterator[SignedUpUser]:
    user = sign_up_user(fuzz_service.url)
    yield user
    user.client.close()


@pytest.fixture(scope="module")
def login_api_schema(fuzz_service: LoginServiceProc) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_service.url}/api/openapi.json")


def no_echo_of_the_input(ctx: Any, response: Any, case: Any) -> bool | None:
    # A refused string field (e.g. a password) must not come back in the error body.
    if response.status_code == 422 and isinstance(case.body, dict):
        for value in case.body.values():
            if isinstance(value, str) and len(value) >= 12:
                assert value not in response.text, "the 422 body echoes a submitted value"
    return None


# The chain is up for the whole run: any 5xx (503 included) is a bug here.
CHECKS = [not_a_server_error, no_echo_of_the_input, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
# argon2 makes each sign-in ~1 s on a busy 2-core box: fewer examples there keep the run bounded.
EXAMPLES = {"/api/auth/signin": 12, "/api/auth/signup": 12}


# schemathesis' own pytest plugin does not run under pytest 9, so Hypothesis drives the
# operations' strategies directly: same generation, same checks.
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_openapi_fuzz(mode: str, login_api_schema: Any, fuzz_service: LoginServiceProc, fuzz_user: SignedUpUser) -> None:
    from hypothesis import given

    generation_mode = schemathesis.GenerationMode(mode)
    seen: dict[str, set[int]] = {}
    operations = [r.ok() for r in login_api_schema.get_all_operations()]
    assert {op.path for op in operations} >= WRITES | {"/api/get-api-key-status", "/api/healthz"}
    for op in operations:
        key = f"{op.method.upper()} {op.path}"
        seen[key] = set()

        @settings(max_examples=EXAMPLES.get(op.path, 50 if mode == "positive" else 25), deadline=None,
                  suppress_health_check=list(HealthCheck), derandomize=True, database=None)
        @given(case=op.as_strategy(generation_mode))
        def run(case: Any) -> None:
            headers = None
            if case.path in WRITES:
                headers = {"Authorization": f"Bearer {fuzz_user.api_key}"}
                if isinstance(case.body, dict) and isinstance(case.body.get("orgId"), str):
                    case.body["orgId"] = fuzz_user.org_id
            response = case.call_and_validate(base_url=fuzz_service.url, headers=headers, timeout=60, checks=CHECKS)
            seen[key].add(response.status_code)

        try:
            run()
        except Unsatisfiable:
            # An operation with no inputs (health, /api/auth/me) has no invalid variant to send.
            assert mode == "negative" and op.path not in WRITES, key
            seen.pop(key)
    print(mode, {k: sorted(v) for k, v in seen.items()})
    if mode == "positive":
        # the fuzzer got past auth into the chain: some writes were mined, some refused by the contract
        # (random bytes are never a valid key proof: registration reaches the contract and is refused)
        assert seen["POST /api/register-peer"] & {400, 409}
        assert seen["POST /api/submit-reward"] & {200, 400, 409}
    else:
        assert all(codes and max(codes) < 500 and 422 in codes | {401} for k, codes in seen.items()
                   if k.startswith("POST /api/") and "auth" not in k), seen


# ------------------------------------------------------------------------------- dashboard

# /api/events never ends (a live stream): its cap has its own test (test_dashboard_attacks).
DASHBOARD_SKIP = {"/api/events"}


@pytest.fixture(scope="module")
def fuzz_dashboard(web_swarm: WebSwarm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardProc]:
    d = launch_dashboard(tmp_path_factory.mktemp("dash-fuzz"), web_swarm, None)
    try:
        yield d
    finally:
        d.stop()


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_dashboard_openapi_fuzz(mode: str, fuzz_dashboard: DashboardProc) -> None:
    from hypothesis import given

    schema = schemathesis.openapi.from_url(f"{fuzz_dashboard.url}/openapi.json")
    generation_mode = schemathesis.GenerationMode(mode)
    seen: dict[str, set[int]] = {}
    operations = [r.ok() for r in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/api/leaderboard", "/api/nodes", "/api/id-to-name", "/api/healthz"}
    for op in operations:
        if op.path in DASHBOARD_SKIP:
            continue
        key = f"{op.method.upper()} {op.path}"
        seen[key] = set()

        @settings(max_examples=40 if mode == "positive" else 20, deadline=None,
                  suppress_health_check=list(HealthCheck), derandomize=True, database=None)
        @given(case=op.as_strategy(generation_mode))
        def run(case: Any) -> None:
            response = case.call_and_validate(base_url=fuzz_dashboard.url, timeout=30,
                                              checks=[not_a_server_error, status_code_conformance,
                                                      content_type_conformance, response_schema_conformance])
            seen[key].add(response.status_code)

        try:
            run()
        except Unsatisfiable:
            assert mode == "negative", key  # an operation without inputs has no invalid variant
            seen.pop(key)
    print(mode, {k: sorted(v) for k, v in seen.items()})
    assert all(codes and max(codes) < 500 for codes in seen.values()), seen
