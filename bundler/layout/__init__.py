"""The OCI image layout on disk."""
