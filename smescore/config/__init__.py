"""Packaged configuration: the score scale and master scale (scorecard.json) and the cold-start
rules (cold_start_rules.json). Read with importlib.resources, never at import time."""
