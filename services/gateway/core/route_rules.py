"""What routes declare for the middlewares that run before routing (the scope a body needs,
a body cap): each route declares it once, as a dependency, and these read the declarations
back into a table of (methods, path pattern) rules."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from fastapi.params import Depends as DependsParam
from fastapi.routing import APIRoute, APIRouter


@dataclass(frozen=True)
class RouteRule:
    """A rule for the requests of one route: its methods and its path pattern."""

    methods: frozenset[str]
    path: re.Pattern[str]

    def matches(self, method: str, path: str) -> bool:
        return method in self.methods and self.path.match(path) is not None


def api_routes(routers: Iterable[APIRouter]
               ) -> Iterator[tuple[APIRoute, list[DependsParam]]]:
    """Every API route of these routers, with its declarations: its router's dependencies,
    then its own."""
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute):
                yield route, [*router.dependencies, *route.dependencies]
