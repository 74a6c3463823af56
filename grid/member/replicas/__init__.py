"""Shells of the replication cores (`replication/`): they carry out the decisions of
`Primary`, `Follower`, `Reconciler` and `Checker` over gRPC streams and the store."""
