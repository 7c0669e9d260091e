"""Chaining stages over many runs: side-by-side worker processes (parallel) and the per-run
pipelines the notebooks call (pipeline). No stage imports it."""
