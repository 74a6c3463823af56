"""Shells of the partitioning cores (`partitioning/`): the coordinator carries out the
`Rebalancer`'s decisions (publish, fill, hand off); routing keeps `Ownership`'s answer
to "which partitions does this member serve"."""
