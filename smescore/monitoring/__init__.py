"""Watching the nightly runs: metrics pushed to Prometheus and the HTML run report."""
