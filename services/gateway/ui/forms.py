"""The search form of the web UI: what it holds as typed, and the `SearchQuery` it asks for.

Unlike the API, a bad field is not a 422: it is noted in `errors` and shown above the form.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlencode

from fastapi import Request

from services.gateway.filters import ImageFilters, instant_range
from services.gateway.search import SearchQuery, Sort, check_query
from shared.config import Settings
from shared.errors import CapsearchError

SORTS: dict[str, Sort] = {"relevance": "relevance", "date": "date", "taken": "taken"}

# size choices of the filter menu: (label, min megapixels, max megapixels)
SIZES: dict[str, tuple[str, float | None, float | None]] = {
    "": ("any size", None, None),
    "small": ("small (under 1 MP)", None, 1.0),
    "medium": ("medium (1 to 4 MP)", 1.0, 4.0),
    "large": ("large (over 4 MP)", 4.0, None),
}


@dataclass
class SearchForm:
    """What the search form holds, as typed (strings), for re-filling it."""

    q: str = ""
    min_score: str = ""
    sort: str = "relevance"
    date_from: str = ""
    date_to: str = ""
    taken_from: str = ""
    taken_to: str = ""
    source: str = ""
    size: str = ""
    hybrid: bool = False
    cursor: str = ""
    errors: list[str] = field(default_factory=list)

    def query(self, settings: Settings, k: int) -> SearchQuery | None:
        """The search this form asks for; None (with the reasons in `errors`) when a field is
        bad. Raises what `check_query` refuses in the text itself."""
        checked = check_query(settings=settings, q=self.q, k=k, min_score=self.threshold())
        filters = self.filters()
        if self.errors:
            return None
        return dataclasses.replace(checked, sort=SORTS.get(self.sort, "relevance"),
                                   filters=filters, hybrid=self.hybrid,
                                   cursor=self.cursor or None)

    def filters(self) -> ImageFilters:
        """The form's filters; a date range that does not parse (or is upside down) is noted
        in `errors` and left out."""
        start, end = self._range(self.date_from, self.date_to,
                                 ("uploaded from", "uploaded until"))
        taken_start, taken_end = self._range(self.taken_from, self.taken_to,
                                             ("taken from", "taken until"))
        _, low, high = SIZES.get(self.size, SIZES[""])
        return ImageFilters(date_from=start, date_to=end, taken_from=taken_start,
                            taken_to=taken_end, source=self.source or None,
                            min_megapixels=low, max_megapixels=high)

    def _range(self, start: str, end: str, names: tuple[str, str]
               ) -> tuple[datetime | None, datetime | None]:
        try:
            return instant_range(start, end, names=names)
        except CapsearchError as exc:
            self.errors.append(exc.message)
            return None, None

    def query_string(self, cursor: str | None = None) -> str:
        """This form as a URL query (with a cursor: the link to the next page)."""
        values = {"q": self.q, "min_score": self.min_score, "sort": self.sort,
                  "date_from": self.date_from, "date_to": self.date_to,
                  "taken_from": self.taken_from, "taken_to": self.taken_to, "source": self.source,
                  "size": self.size, "hybrid": "1" if self.hybrid else "", "form": "1",
                  "cursor": cursor or ""}
        return urlencode({k: v for k, v in values.items() if v})

    def threshold(self) -> float:
        try:
            value = float(self.min_score) if self.min_score else -1.0
        except ValueError:
            self.errors.append("the relevance threshold must be a number")
            return -1.0
        return min(max(value, -1.0), 1.0)


def search_form(
    request: Request,
    q: str = "", min_score: str = "", sort: str = "relevance", date_from: str = "",
    date_to: str = "", taken_from: str = "", taken_to: str = "", source: str = "",
    size: str = "", hybrid: str = "", cursor: str = "",
) -> SearchForm:
    """The form as the request's query string fills it."""
    # a submitted form carries `form=1`: then an unchecked box means off; a bare link
    # (`/?q=dog`) gets the server's default
    if "form" in request.query_params or "hybrid" in request.query_params:
        use_hybrid = hybrid in ("1", "on", "true")
    else:
        use_hybrid = request.app.state.context.settings.ranking.hybrid
    return SearchForm(q=q.strip(), min_score=min_score, sort=sort, date_from=date_from,
                      date_to=date_to, taken_from=taken_from, taken_to=taken_to,
                      source=source, size=size, hybrid=use_hybrid,
                      cursor=cursor)
