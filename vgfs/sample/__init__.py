"""Write a synthetic Visual Genome release in the official latest format.

It feeds the demo, the tests and the full-scale benchmarks, so it copies the shapes and traps
of the real files. The job is split by module: `vocab` (names, synsets and the whole-dataset
files), `annotations` (the per-image files), `jpegs` (the images) and `writer` (streaming it
all to disk, in parallel for large samples).
"""

from vgfs.sample.writer import write_sample

__all__ = ["write_sample"]
