"""`python -m services.search`: serve the search service on settings.host:settings.search_port."""

from __future__ import annotations

import uvicorn

from services.search.app import create_app
from shared.config import get_settings
from shared.db.migrate import require_current_at_start
from shared.logging import configure_logging


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, json_logs=settings.log_json)
    require_current_at_start(settings.sqlalchemy_url, "search")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.search_port,
                log_config=None, access_log=False)


if __name__ == "__main__":
    main()
