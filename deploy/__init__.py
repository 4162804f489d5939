"""Deployment tooling: the kustomize-subset renderer and the offline checks (not shipped)."""
