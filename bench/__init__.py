"""Benchmarks that back the figures quoted in docs/."""
