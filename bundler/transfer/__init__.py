"""Moving images: the source/sink transports over registries and layouts, the copy engine, reading files out of layers."""
