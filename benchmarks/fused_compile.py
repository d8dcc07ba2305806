"""What the fused path's compiler costs: a cold start (empty cache) and a warm one (cached), per rule.

    .venv/bin/python benchmarks/fused_compile.py            # every built-in rule and the shipped Lion

Each measurement is a fresh process, so nothing is cached in memory: it makes the rule's optimizer on
a few small tensors and times its first two ``step()`` calls (trace, build or load, self-check, steps)
against the next one (the steady state). *Cold*: a new, empty ``TORCH_EXTENSIONS_DIR`` (the build runs); *warm*: the
same folder again (the library is loaded from disk). Targets (issue 26): cold <= 30 s, warm <= 1 s.

The native table reader (``optim/_gather_native.py``) is built once per machine, not per rule: its
cold build is timed first, on its own, and each rule's cold folder starts with it already built (so
"cold" is a new rule on a machine that has stepped once; a machine's very first fused step pays both).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

RULES = {
    "adam": "import descentlab.optim as dl; make = lambda p: dl.Adam(p)",
    "adamw-amsgrad": "import descentlab.optim as dl; make = lambda p: dl.AdamW(p, amsgrad=True)",
    "sgd-momentum": "import descentlab.optim as dl; make = lambda p: dl.SGD(p, lr=0.1, momentum=0.9)",
    "adagrad": "import descentlab.optim as dl; make = lambda p: dl.Adagrad(p)",
    "rmsprop": "import descentlab.optim as dl; make = lambda p: dl.RMSprop(p)",
    "lion (user rule)": "from descentlab.examples.lion import Lion; make = Lion",
}

CHILD = """
import json, time, torch
{make}
params = [torch.randn(100, requires_grad=True) for _ in range(3)]
for p in params:
    p.grad = torch.randn(100)
opt = make(params)
start = time.perf_counter()
opt.step()  # SGD momentum's first step makes its buffer on the core: its kernel is first used at the second
opt.step()
first = time.perf_counter() - start
start = time.perf_counter(); opt.step(); second = time.perf_counter() - start
import descentlab.optim as dl
print(json.dumps({{"first": first, "second": second, "route": dl.last_routes(opt)[0].path}}))
"""


READER = """
import json, time
from descentlab.optim import _gather_native
start = time.perf_counter()
built = _gather_native.reader() is not None
print(json.dumps({"seconds": time.perf_counter() - start, "built": built}))
"""


def _child(code: str, folder: str) -> dict:
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": folder, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(make: str, folder: str) -> dict[str, float]:
    return _child(CHILD.format(make=make), folder)


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as readers:
        cold = _child(READER, readers)
        warm = _child(READER, readers)
        print(f"native table reader, once per machine: cold {cold['seconds']:.2f} s, warm {warm['seconds']:.3f} s "
              f"(built: {cold['built']})")
        _rules(readers)


def _rules(readers: str) -> None:
    print(f"{'rule':<18} {'cold 2 steps s':>18} {'warm 2 steps s':>18} {'steady step ms':>15}  route")
    for name, make in RULES.items():
        with tempfile.TemporaryDirectory() as folder:
            shutil.copytree(readers, folder, dirs_exist_ok=True)  # the reader built: only the rule's kernel is new
            cold = measure(make, folder)
            warm = measure(make, folder)
        print(f"{name:<18} {cold['first']:>18.2f} {warm['first']:>18.2f} {warm['second'] * 1e3:>15.3f}  "
              f"{warm['route']}")


if __name__ == "__main__":
    main()
