"""The search service's scrape-time metrics: the serving index's size, version and clusters."""

from __future__ import annotations

from fastapi import FastAPI

from shared.metrics import Collect, set_index_stats


def index_collector(app: FastAPI) -> Collect:
    async def collect() -> None:
        service = getattr(app.state, "service", None)
        if service is None or not service.loaded:
            return  # still loading: the gauges keep their last values
        stats = service.stats()
        set_index_stats(size=stats.size, version=stats.index_version, clusters=stats.n_clusters)

    return collect
