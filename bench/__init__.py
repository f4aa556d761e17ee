"""The overload benchmark: Sluice side by side with a plain deployment (`make bench`).

docs/benchmark.md describes the method and how to read the report.
"""
