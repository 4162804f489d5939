"""Schemathesis against the gateway's OpenAPI document: valid and invalid requests generated
from the schema, every response checked against it. Shared by the CI test
(tests/integration/test_fuzz_gateway.py, a few cases per operation) and bench/reliability.py.

Server errors (5xx) are counted apart from the other failures, except 503/504 from a
dependency that was down on purpose, which the caller can choose to allow.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, ignored_auth]


@dataclass
class FuzzReport:
    cases: int = 0
    server_errors: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def merge_failure(self, label: str, detail: str) -> None:
        if len(self.failures) < 50:
            self.failures.append(f"{label}: {detail[:500]}")


def run_fuzz(base_url: str, *, api_key: str, examples_per_operation: int,
             time_budget_s: float | None = None, exclude_paths: tuple[str, ...] = (),
             seed: int = 0) -> FuzzReport:
    """Fuzz every operation of the gateway's schema with positive and negative cases."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    headers = {"Authorization": f"Bearer {api_key}"}
    report = FuzzReport()
    started = time.monotonic()
    deadline = started + time_budget_s if time_budget_s else None
    operations = [op.ok() for op in schema.get_all_operations()]
    operations = [op for op in operations if op.path not in exclude_paths]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if deadline is not None and time.monotonic() > deadline:
                break
            _fuzz_operation(operation, mode, base_url, headers, examples_per_operation,
                            deadline, report, seed)
    report.seconds = time.monotonic() - started
    return report


def _fuzz_operation(operation: object, mode: GenerationMode, base_url: str,
                    headers: dict[str, str], examples: int, deadline: float | None,
                    report: FuzzReport, seed: int) -> None:
    label = f"{operation.label} [{mode.value}]"  # type: ignore[attr-defined]
    strategy = operation.as_strategy(generation_mode=mode)  # type: ignore[attr-defined]

    @hypothesis_seed(seed)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck),
              report_multiple_bugs=False)
    @given(case=strategy)
    def exercise(case: object) -> None:
        if deadline is not None and time.monotonic() > deadline:
            return
        try:
            response = case.call(base_url=base_url, headers=headers,  # type: ignore[attr-defined]
                                 timeout=60)
        except Exception as exc:  # a transport failure: the server fell over
            report.cases += 1
            report.server_errors += 1
            report.merge_failure(label, f"no response: {type(exc).__name__}: {exc}")
            return
        report.cases += 1
        report.statuses[response.status_code] += 1
        if response.status_code >= 500:
            report.server_errors += 1
        try:
            case.validate_response(response, checks=CHECKS,  # type: ignore[attr-defined]
                                   headers=headers)
        except (FailureGroup, Exception) as exc:  # one group describing every failed check
            report.merge_failure(label, f"{response.status_code} {case.method} "  # type: ignore[attr-defined]
                                 f"{response.request.url}: {exc}")

    try:
        exercise()
    except Unsatisfiable:
        pass
    except Exception as exc:  # generation itself failed: report it, do not hide it
        report.merge_failure(label, f"could not generate cases: {type(exc).__name__}: {exc}")
