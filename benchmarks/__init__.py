"""Benchmarks: cxloop's daily cycle against a hand-written DuckDB baseline, at growing scale.

Run `python -m benchmarks --scale 10k,100k,1m`; results land in `benchmarks/results/`.
"""
