"""Deployment tooling: the offline checks deploy/validate.sh runs (not shipped)."""
