"""Benchmark entries for launch/bench.py.

Each module here (other than `harness`) defines `NAME: str` and
`run(size: str) -> list[dict]` (size is "quick" or "full"); every row names the
method, its median time and its ratio to the baseline timed in the same run.
"""
