"""`python -m services.search`: serve the search service on settings.host:settings.search_port."""

from __future__ import annotations

from services.search.app import create_app
from shared.web import serve


def main() -> None:
    serve(create_app, "search_port", access_log=False)


if __name__ == "__main__":
    main()
