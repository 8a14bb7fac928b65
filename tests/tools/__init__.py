"""Helpers that pytest does not collect: a fault-injecting filesystem, a soak run, a fuzzer."""
