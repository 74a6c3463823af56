"""Local clusters of real member processes, and the workloads they run.

The same harness serves `grid cluster up`, `grid demo`, the benchmarks and the
integration tests: cluster.py on loopback, netns.py in network namespaces,
scenarios.py the cache workloads.
"""
