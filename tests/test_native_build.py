"""Building the native pieces (``optim/_native.py``): what a killed or concurrent build leaves behind."""

from __future__ import annotations


def test_a_build_killed_mid_way_does_not_stall_the_next_one(tmp_path) -> None:
    """cpp_extension keeps its build lock as a file; a process killed mid-build leaves it, and every later
    build of that library used to wait for it forever. The builder's lock (an flock the OS drops with its
    holder) makes such a file stale, so the next build removes it and builds. Run in a child process
    with a timeout, so a regression fails instead of hanging the suite."""
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import os, torch
        from descentlab.optim import _native
        code = 'extern "C" int dl_answer() { return 42; }\\n'
        name = _native._codegen.name_of(code, ["-O1", _native.cpu_key(), torch.__version__], "descentlab_test")
        directory = os.path.join(os.environ["TORCH_EXTENSIONS_DIR"], "descentlab", name)
        os.makedirs(directory)
        open(os.path.join(directory, "lock"), "w").close()  # what a killed builder leaves behind
        library, problem, _ = _native.build(code, "a test library", ["-O1"], [], {}, prefix="descentlab_test")
        assert problem is None, problem
        print(library.dl_answer())
    """)
    environment = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "42"


def test_the_kernel_builds_and_is_bitwise_for_a_cpu_with_avx_but_not_avx2(monkeypatch) -> None:
    """The generated C picks its vector code by the compiler's target macros: the emulated square root
    and its range test need AVX2 (integer compares on 256 bits), so a CPU with AVX alone (Sandy and Ivy
    Bridge) must get the portable path, not a build error that leaves every group on the core."""
    import platform

    import pytest
    import torch

    import descentlab.optim as dl
    from descentlab.optim import _fused

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("an x86 target")
    monkeypatch.setattr(_fused, "FLAGS", tuple("-march=sandybridge" if f == "-march=native" else f
                                               for f in _fused.FLAGS))
    monkeypatch.setattr(_fused, "LIBRARY", _fused._Library())
    torch.manual_seed(0)
    start, grads = torch.randn(1003), [torch.randn(1003) for _ in range(3)]
    ours, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    optimizer, reference = dl.Adam([ours], lr=1e-2), torch.optim.Adam([theirs], lr=1e-2)
    for grad in grads:
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        optimizer.step()
        reference.step()
    assert dl.last_routes(optimizer)[0].path == "fused", dl.last_routes(optimizer)
    assert torch.equal(ours, theirs)
