"""Packaged configuration: the score scale and master scale (scorecard.json), the cold-start
rules (cold_start_rules.json), the drift thresholds (drift.json) and the publication gates
(gates.json). Read with importlib.resources, never at import time."""
