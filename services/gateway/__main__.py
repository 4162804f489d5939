"""`python -m services.gateway`: serve the gateway with uvicorn on settings.host:gateway_port."""

from __future__ import annotations

from services.gateway.app import create_app
from shared.web import serve


def main() -> None:
    serve(create_app, "gateway_port", proxy_headers=True)


if __name__ == "__main__":
    main()
