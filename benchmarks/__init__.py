"""Benchmarks: runnable scripts, not tests (``python -m benchmarks.<name>``)."""
