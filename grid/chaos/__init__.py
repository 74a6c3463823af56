"""The chaos harness: a real cluster, a workload that records a history, faults, checkers.

    grid chaos list
    grid chaos run --backend process --scenario kill-primary --duration 20 --seed 1

One module per concern, in the order a run uses them:

- backends.py: start and stop the members (process: LocalCluster on loopback), signal
  them, and say what cannot run here;
- probe.py: the admin questions a run asks members over gRPC (stats, table, digests);
- workload.py and history.py: client threads through the SDK, every operation recorded
  (invocation, completion, outcome ok/fail/unknown) as JSONL;
- nemesis.py: the faults (kill -9 and restart, SIGSTOP/SIGCONT, graceful leave and
  rejoin), each recorded as a window, and the exits it caused;
- scenarios.py: which faults, on whom, when;
- checkers.py: verdicts over the history and the final cluster state;
- report.py: live progress, the summary, the JSON file and the plot;
- run.py: one run from arguments to exit code (0 all hold, 1 a checker failed, 2 bad
  arguments or a backend that cannot run here);
- planted_member.py: a member started with one of simulation/plants.py's bugs (tests
  of the harness itself: a run with a plant must fail).

docs/chaos.md says how to run it and what the figures mean.
"""
