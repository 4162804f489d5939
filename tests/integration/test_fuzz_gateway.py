"""Schemathesis against the gateway's OpenAPI document (a short run; bench/reliability.py runs
the long one): no server error, every response valid against the schema, no route that
answers without a key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import PG_ADMIN_URL
from tests.support.faultstack import FaultStack, build_fault_stack
from tests.support.fuzz import run_fuzz
from tests.support.s3server import S3Server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fuzz_stack(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[FaultStack]:
    # its own stack: fuzzed DELETEs and uploads must not touch other tests' images
    stack = build_fault_stack(pg_admin_url=PG_ADMIN_URL, s3=s3_server,
                              work_dir=tmp_path_factory.mktemp("fuzz"),
                              services=("encoder", "search", "gateway"))
    yield stack
    stack.close()


def test_fuzzed_requests_get_no_server_error_and_schema_valid_answers(
        fuzz_stack: FaultStack) -> None:
    report = run_fuzz(fuzz_stack.url, api_key=fuzz_stack.api_key, examples_per_operation=6,
                      time_budget_s=150, seed=1)
    assert report.cases >= 100, report
    assert report.server_errors == 0, report.failures
    assert report.failures == [], "\n".join(report.failures)
    assert report.statuses[200] > 0  # some cases were valid enough to succeed
