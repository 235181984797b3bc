"""graphgt: a graph-transformer research framework (GraphGPS-style models, from molecules to papers100M)."""
import os as _os

# torch's OpenMP threads sleep between parallel regions instead of spinning (libgomp's default,
# ACTIVE). graphgt's training processes interleave torch ops with serial work (sampling, gathering,
# Python) and share cores with loader workers and numba kernels; spinning threads steal those cores:
# sampled SAGE training with 2 threads on 2 cores ran 0.77 batches/s spinning vs 1.25 sleeping
# (1 thread: 0.98), bench/threads.py. Read when libgomp loads, i.e. at the first `import torch`, so
# it applies when graphgt is imported first (the CLI); a value the user set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
