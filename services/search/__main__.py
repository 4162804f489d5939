"""`python -m services.search`: serve the search service on settings.host:settings.search_port."""

from __future__ import annotations

from services.search.app import create_app
from shared.db.migrate import require_current_at_start
from shared.web import serve


def main() -> None:
    # a database that answers but is behind the migrations: exit naming `capsearch db upgrade`
    serve(create_app, "search_port", access_log=False,
          before_start=lambda s: require_current_at_start(s.sqlalchemy_url, "search"))


if __name__ == "__main__":
    main()
