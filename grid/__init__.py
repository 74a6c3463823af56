"""grid: a peer-to-peer in-memory data grid for Python."""

__version__ = "0.1.0"
