"""Benchmarks behind ``rio-rt bench``."""
