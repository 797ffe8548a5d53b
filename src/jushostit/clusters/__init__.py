"""Kubernetes clusters: registration, observation, placement and isolation checks."""
