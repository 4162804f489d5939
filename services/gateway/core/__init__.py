"""Cross-cutting parts of the gateway that every route stands on: its context (what it talks
to), auth and scopes, rate limits, the body cap, background loops and metrics."""
