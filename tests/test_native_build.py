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
