"""Value types of images: digests and verified streams, references, media types and descriptors, the planned image."""
