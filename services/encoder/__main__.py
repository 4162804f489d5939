"""`python -m services.encoder`: serve the encoder on settings.host:settings.encoder_port."""

from __future__ import annotations

from services.encoder.app import create_app
from shared.web import serve


def main() -> None:
    serve(create_app, "encoder_port", access_log=False)


if __name__ == "__main__":
    main()
