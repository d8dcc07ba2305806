"""Step time of descentlab's flat engine vs torch.optim (for-loop / foreach / fused), ratios from one run.

    .venv/bin/python benchmarks/flat_engine.py [--params 20M] [--layouts 1,200,5000] [--engine compiled]

Same as ``descentlab bench``; run it on an idle machine (OpenMP kernels slow down badly when the
cores are shared). Targets (issue 7) are read off the ``ours x`` column, never asserted in tests.
"""

from __future__ import annotations

import sys

from descentlab.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
