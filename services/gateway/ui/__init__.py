"""The web UI: server-rendered pages (`pages.py`) over the same domain functions as the API."""
