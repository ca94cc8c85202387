"""The fault benchmark: killed workers, clients that leave, malformed input (benchmark.py)."""
