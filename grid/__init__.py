"""grid: a peer-to-peer in-memory data grid for Python."""
