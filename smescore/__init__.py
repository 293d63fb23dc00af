"""smescore: nightly SME portfolio rescoring from alternative data."""

__version__ = "0.1.0"     # setup.py reads it from here; `smescore --version` prints it
