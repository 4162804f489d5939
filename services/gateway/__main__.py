"""`python -m services.gateway`: serve the gateway with uvicorn on settings.host:gateway_port."""

from __future__ import annotations

from services.gateway.app import create_app
from shared.db.migrate import require_current_at_start
from shared.web import serve


def main() -> None:
    # a database that answers but is behind the migrations: exit naming `capsearch db upgrade`
    serve(create_app, "gateway_port", proxy_headers=True,
          before_start=lambda s: require_current_at_start(s.sqlalchemy_url, "gateway"))


if __name__ == "__main__":
    main()
