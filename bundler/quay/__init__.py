"""Quay as the mirror registry: its REST API, config, TLS material, podman wrapper and the bring-up."""
