"""spkd benchmarks: `python -m bench [NAME…] [--quick]` (`make bench`).

Each benchmark prints a table and ends with its ratios and the targets (PASS/MISS).
They run the daemon's real code paths (Store, Watcher, Supervisor, Worker, Engine);
nothing here is part of the test pass/fail. Results are recorded in BENCHMARKS.md.
"""
