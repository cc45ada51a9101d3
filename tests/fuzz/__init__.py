"""Generated fuzz corpus and harness (see runner.py)."""
