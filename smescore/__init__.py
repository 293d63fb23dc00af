"""smescore: nightly SME portfolio rescoring from alternative data."""
import os

__version__ = "0.1.0"     # setup.py reads it from here; `smescore --version` prints it

# Arrow's allocator (mimalloc) backs its large buffers with transparent huge pages. On this
# project's 2-core VM, with its page cache full, those page faults were slow: sorting the 100k
# book's 8.3M attribution rows took 10-12 s, 90% of it in the kernel, against 1.3 s without
# them (bench/README.md). mimalloc reads the setting once, when pyarrow loads, so it is set on
# the first import of smescore, which every entry point and package of the product makes before
# pyarrow's; an operator's own setting wins.
os.environ.setdefault("MIMALLOC_ALLOW_THP", "0")
