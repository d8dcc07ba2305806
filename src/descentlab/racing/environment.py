"""Where a race ran: package versions (recorded in every results row) and the machine (in the report)."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """Versions of Python and the packages a race's numbers depend on."""
    import torch

    from ..version import __version__

    return {"descentlab": __version__, "torch": torch.__version__, "numpy": _version("numpy"),
            "mnist1d": _version("mnist1d"), "scikit-learn": _version("scikit-learn"),
            "python": platform.python_version()}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(jobs: int, device: str) -> dict[str, str]:
    """CPU, cores, workers, threads and the training device: recorded with every run (the report's
    environment section lists what the runs were made on)."""
    import torch

    from ..train.device import describe

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return {"platform": platform.platform(), "cpu": cpu_model(), "cores available": str(cores),
            "parallel runs (--jobs)": str(jobs), "torch threads per run": "1",
            "device": describe(torch.device(device)), "python executable": sys.executable}
