"""deploy/grafana/capsearch.json queries only series that shared.metrics defines."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import shared.metrics  # noqa: F401  (registers the series)

DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "capsearch.json"


def known_series() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    for metric in vars(shared.metrics).values():  # labelled series not observed yet
        if isinstance(metric, MetricWrapperBase):
            for family in metric.describe():
                names.add(family.name)
                names.update(f"{family.name}{s}" for s in ("_count", "_sum", "_bucket",
                                                            "_total"))
    return names


def test_dashboard_is_grafana_json_with_a_datasource_input() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["panels"]
    assert board["__inputs"][0]["pluginId"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_every_query_names_a_capsearch_series_that_exists() -> None:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"capsearch_[a-z_]+", e)}
    assert used, "the dashboard queries nothing"
    assert used <= known_series(), used - known_series()
