"""Operator catalogs: the file-based catalog model, sqlite catalogs, planning and building pruned catalogs."""
