"""ocp-bundler: carry OpenShift content into disconnected networks (pack, verify, unpack)."""

__version__ = "0.1.0"
