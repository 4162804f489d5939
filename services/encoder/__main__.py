"""`python -m services.encoder`: serve the encoder on settings.host:settings.encoder_port."""

from __future__ import annotations

import uvicorn

from services.encoder.app import create_app
from shared.config import get_settings
from shared.logging import configure_logging


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, json_logs=settings.log_json)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.encoder_port,
                log_config=None, access_log=False)


if __name__ == "__main__":
    main()
