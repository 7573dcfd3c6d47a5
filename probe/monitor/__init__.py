"""Monitoring: `watch` on an interval, its TOML config, Prometheus metrics, plugin output."""
