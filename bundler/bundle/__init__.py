"""The carried bundle: its signed manifest, volumes, signing keys, and verification on the far side."""
