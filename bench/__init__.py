"""Benchmarks: scripts that print a table and, as their last line, one JSON object (see bench/README.md)."""
