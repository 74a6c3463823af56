"""Where keys live: key -> partition, partition -> replicas, table versions.

Pure functions and values, no IO. Members and smart clients must compute the
same answers from the same inputs, so nothing here may depend on local state.
"""

from partitioning.keys import DEFAULT_PARTITION_COUNT, partition_of, routing_key

__all__ = ["DEFAULT_PARTITION_COUNT", "partition_of", "routing_key"]
