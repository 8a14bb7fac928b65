"""Benchmarks of vgfs against its anchors: `python -m benchmarks [--quick]` (see README.md)."""
