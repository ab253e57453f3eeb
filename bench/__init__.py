"""`make bench`: the benchmark harness of issue 7 (see bench/__main__.py)."""
