"""Step time of descentlab's flat engine vs torch.optim (for-loop / foreach / fused), ratios from one run.

    .venv/bin/python benchmarks/flat_engine.py [--params 20M] [--layouts 1,200,5000] [--engine compiled] [--quick]

Same as ``descentlab bench`` (see :mod:`descentlab.bench` for the method: compile before timing,
variants stepped in seeded random rounds after a cache flush, memory as malloc bytes held + resident
high-water growth). It prints
the table and, below it, issue 7's targets marked met / MISSED with the numbers; nothing is asserted.
Run it on an idle machine (OpenMP kernels slow down badly when the cores are shared): check
``uptime`` first and rerun when the load average is above ~1.5.
"""

from __future__ import annotations

import sys

from descentlab.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
