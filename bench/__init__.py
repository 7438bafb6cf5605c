"""Benchmarks (run as scripts, e.g. ``python bench/iscsi_io.py``; most need root)."""
