"""Compiling a C++ source into a loaded function: ``torch.utils.cpp_extension`` builds it once per machine
(its extension directory, the source's digest as the name), ``ctypes`` loads it.

Shared by the fused kernels (:mod:`._fused`) and the native table reader (:mod:`._gather_native`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import shutil
import sys
import sysconfig
import time
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any

import torch

from . import _codegen

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None  # type: ignore[assignment]

Built = tuple[Any, str | None, float]
"""(the loaded library or None, why it could not be built or None, seconds the build or load took)."""


def cpu_key() -> str:
    """The machine the code is built for (``-march=native``): architecture and CPU flags."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return f"{platform.machine()} {flags.strip()}"


def _find_ninja() -> None:
    """cpp_extension runs ``ninja`` from PATH; a virtual environment used without activating it has
    the ``ninja`` package's binary off PATH: put it there (this process and its children only)."""
    if shutil.which("ninja") is None:
        try:
            import ninja  # type: ignore[import-not-found]
        except ImportError:
            return
        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])


def _write_atomically(path: str, text: str) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def switched_off(variable: str) -> str | None:
    """``variable=value`` when the environment switches a native piece off (0, off, false, no), else None.
    Read at each call, so a change made while running is honoured."""
    value = os.environ.get(variable)
    if value is not None and value.strip().lower() in ("0", "off", "false", "no"):
        return f"{variable}={value}"
    return None


BUILDER_WAIT_S = 600.0
"""Longest wait for another process's build of the same library (a cold build takes about 20 s)."""


@contextlib.contextmanager
def _builder_lock(directory: str, name: str) -> Iterator[None]:
    """Hold the one builder's lock of ``directory``: an ``flock`` the kernel drops when its holder exits,
    however it exits. ``cpp_extension.load`` keeps its own lock as a file (``lock``) that a process killed
    mid-build leaves behind, after which every later build of that library waits for it forever; holding
    this lock, no live descentlab process is building, so such a file is stale and removed. Waits at most
    :data:`BUILDER_WAIT_S` for a live builder, then raises ``TimeoutError`` (the caller's slower path runs)."""
    if fcntl is None:  # no flock on this platform: cpp_extension's own lock only
        yield
        return
    with open(os.path.join(directory, f"{name}.builder"), "a+") as handle:
        deadline = time.monotonic() + BUILDER_WAIT_S
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another process has been building {name} for {BUILDER_WAIT_S:.0f} s") \
                        from None
                time.sleep(0.1)
        try:
            stale = os.path.join(directory, "lock")
            if os.path.exists(stale):
                os.remove(stale)
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def function(library: Any, symbol: str, argtypes: Sequence[Any], restype: Any) -> Any:
    """``library``'s C function ``symbol`` with its argument and result types declared."""
    bound = getattr(library, symbol)
    bound.argtypes = list(argtypes)
    bound.restype = restype
    return bound


def build(code: str, what: str, cflags: Sequence[str], ldflags: Sequence[str], cache: MutableMapping[str, Built],
          python_api: bool = False, prefix: str = "descentlab_fused") -> Built:
    """Compile ``code`` (or load it from torch's extension cache) and load the library.

    ``cache``: this process's builds by name (``prefix`` and a digest of the source, the flags, the
    machine and torch's version). ``python_api``: the library uses the Python C API (loaded with
    ``ctypes.PyDLL``: its functions are called holding the GIL; the name then also carries the
    interpreter's ABI, since the code inlines CPython's macros). Any failure (no compiler, no ninja, a
    build error) is returned as the problem ``f"building {what} failed (...)"``, never raised."""
    interpreter = [sys.implementation.cache_tag or "", str(sysconfig.get_config_var("SOABI"))] if python_api else []
    name = _codegen.name_of(code, [*cflags, *ldflags, cpu_key(), torch.__version__, *interpreter], prefix)
    known = cache.get(name)
    if known is not None:
        return known
    start = time.perf_counter()
    try:
        from torch.utils import cpp_extension

        _find_ninja()

        root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
        directory = os.path.join(root, "descentlab", name)
        built = os.path.join(directory, f"{name}.built")
        if not os.path.exists(built):  # a warm start skips the build tools (ninja, compiler checks) entirely
            os.makedirs(directory, exist_ok=True)
            with _builder_lock(directory, name):
                if not os.path.exists(built):  # another process may have built it while this one waited
                    path = os.path.join(directory, f"{name}.cpp")
                    if not os.path.exists(path):  # the name is the source's digest: an existing file is this
                        _write_atomically(path, code)  # source (rewriting it would make ninja relink a library in use)
                    cpp_extension.load(name, [path], extra_cflags=list(cflags), extra_ldflags=list(ldflags),
                                       build_directory=directory, is_python_module=False, verbose=False)
                    _write_atomically(built, name)  # only after a complete build: the library is whole
        loader = ctypes.PyDLL if python_api else ctypes.CDLL
        result: Built = (loader(os.path.join(directory, f"{name}.so")), None, time.perf_counter() - start)
    except Exception as error:  # the caller's slower path runs, with the reason
        message = " ".join(str(error).split())[:200]
        result = (None, f"building {what} failed ({type(error).__name__}: {message})", time.perf_counter() - start)
    cache[name] = result
    return result
