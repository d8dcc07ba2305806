"""descentlab.allocator: a race worker's step temporaries reuse its heap instead of faulting fresh pages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from descentlab.allocator import keep_freed_memory

PROBE = """
import resource, sys, torch
from descentlab.allocator import keep_freed_memory
from descentlab.optim import resolve
from descentlab.optim.stacked import StackedRule
torch.set_num_threads(1)
if sys.argv[1] == "keep":
    assert keep_freed_memory()
shapes = [(100, 40), (100,), (100, 100), (100,), (10, 100), (10,)]
entry = resolve("adam")
params = [torch.randn(23, *s) for s in shapes]
grads = [torch.randn(23, *s) for s in shapes]
rule = StackedRule(entry.cls.rule, entry.defaults, params)
lr = torch.full((23,), 1e-3)
for _ in range(10):
    rule.step(params, grads, lr)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    rule.step(params, grads, lr)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 50)
"""


def _faults_per_step(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120, check=True)
    return float(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux") or not keep_freed_memory(), reason="needs glibc's mallopt")
def test_stacked_update_temporaries_stop_faulting_pages():
    """Adam's stacked update at k = 23 (MNIST-1D's MLP shapes): ~1 MB temporaries each step. With glibc's
    defaults they come as fresh pages (hundreds of minor faults per step); with the race workers'
    setting they reuse the heap."""
    assert _faults_per_step("default") > 100
    assert _faults_per_step("keep") < 5
