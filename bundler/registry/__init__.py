"""Talking to registries: the shared HTTP layer, credentials and tokens, the distribution-API client."""
