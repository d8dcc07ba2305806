"""The flat engine's per-step check as a small C++ extension, built once per machine in the background.

Before each step the engine must know that every staged ``p.grad`` still is its view of the flat
gradient buffer, every own gradient is dense, and every parameter still lives in its slice
(``_Bucket.bound_as_before``). In Python that is a few torch attribute and method calls per
parameter: at 5000 parameters 1.1-2.0 ms a step with warm caches and 2.0-3.8 ms cold. The same loop
in C++ (``_bound_check.cpp``) reads the tensors directly: 0.10-0.19 ms warm and 0.4-0.8 ms cold
(``benchmarks/step_overheads.py``).

It is compiled with the C++ compiler torch.compile already uses (``g++`` against torch's headers,
about 20 s on 2 cores), only for a bucket the engine runs compiled and with at least
:data:`NATIVE_CHECK_PARAMS` parameters, in a background thread: steps use the Python check until the
library is ready. The library goes to ``$DESCENTLAB_CACHE/native`` (default
``~/.cache/descentlab/native``) under a name hashed from its source, torch's version and Python's ABI,
written to a temporary name and renamed, so concurrent processes never see half a file and later
processes load it at once. If the build fails (no compiler), the Python check stays, with one warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch

from ..cache import default_cache_dir

NATIVE_CHECK_PARAMS = 64
"""Buckets with at least this many parameters build and use the C++ check (fewer: it would save < 50 us)."""
SOURCE = Path(__file__).with_name("_bound_check.cpp")
MODULE = "_descentlab_bound_check"
COMPILER = os.environ.get("CXX", "g++")
BUILD_TIMEOUT_S = 600.0
"""A compiler still running after this long is stopped and the build counts as failed."""
STALE_BUILD_S = 3600.0
"""A temporary build file this old was left by a process that exited mid-build: removed."""


class _State:
    module: ModuleType | None = None
    thread: threading.Thread | None = None
    error: str | None = None
    settled = False
    """The build has ended and its result (``module`` or ``error``, said in a warning) is in."""
    lock = threading.Lock()


def checker() -> ModuleType | None:
    """The loaded extension, or None while it is being built (the first call starts that) or if it failed."""
    if not _State.settled:
        start_build()
        thread = _State.thread
        if thread is not None and not thread.is_alive():
            _settle()
    return _State.module


def start_build() -> None:
    """Start building the extension in a background thread, unless it is cached or already started."""
    with _State.lock:
        if _State.thread is not None:
            return
        if library_path().exists():
            _State.thread = threading.Thread()  # nothing to build: never started, so never alive
            return
        _State.thread = threading.Thread(target=_build_quietly, name="descentlab-native-build", daemon=True)
        _State.thread.start()


def wait(timeout: float | None = None) -> ModuleType | None:
    """Build (or load) the extension now and return it; None if it cannot be built (or, with ``timeout``
    seconds, is not built by then)."""
    start_build()
    thread = _State.thread
    if thread is not None and thread.ident is not None:
        thread.join(timeout)
    return checker()


def library_path() -> Path:
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), torch.__version__.encode(),
                                     sys.implementation.cache_tag.encode(), " ".join(_flags()).encode()]))
    return default_cache_dir() / "native" / f"bound_check-{key.hexdigest()[:16]}{_suffix()}"


def _suffix() -> str:
    return str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")


def _flags() -> list[str]:
    from torch.utils import cpp_extension

    includes = [*cpp_extension.include_paths(), sysconfig.get_paths()["include"]]
    libs = cpp_extension.library_paths()
    abi = int(bool(torch._C._GLIBCXX_USE_CXX11_ABI))
    return ["-O2", "-std=c++20", "-fPIC", "-shared", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
            *(f"-I{p}" for p in includes), *(f"-L{p}" for p in libs), *(f"-Wl,-rpath,{p}" for p in libs),
            "-lc10", "-ltorch", "-ltorch_cpu", "-ltorch_python"]


def build(target: Path) -> None:
    """Compile :data:`SOURCE` into ``target`` (atomically: a temporary file renamed into place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(".build-*"):  # left by a process that exited mid-build
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > STALE_BUILD_S:
                stale.unlink()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".build-", suffix=_suffix())
    os.close(fd)
    try:
        done = subprocess.run([COMPILER, str(SOURCE), "-o", tmp, *_flags()], capture_output=True, text=True,
                              check=False, timeout=BUILD_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"{COMPILER} exited with {done.returncode}: {done.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _build_quietly() -> None:
    try:
        build(library_path())
    except Exception as error:  # reported by _settle, on the thread that steps
        _State.error = f"{type(error).__name__}: {error}"


def _settle() -> None:
    """Load the built library, or say once why there is none."""
    with _State.lock:
        if _State.settled:
            return
        if _State.error is None:
            try:
                _State.module = load(library_path())
            except Exception as error:
                _State.error = f"{type(error).__name__}: {error}"
        _State.settled = True
    if _State.module is None:
        warnings.warn(f"descentlab: the C++ parameter check could not be built or loaded ({_State.error}); "
                      "steps use the Python check (about 0.2-0.7 us more per parameter)", RuntimeWarning,
                      stacklevel=4)


def load(path: Path) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(MODULE, str(path))
    spec = importlib.util.spec_from_file_location(MODULE, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def build_now() -> str:
    """Build (or find) the extension and say where it is or why not (the Makefile runs this at install)."""
    built = wait()
    return f"descentlab C++ parameter check: {library_path() if built else 'not built: ' + str(_State.error)}"
