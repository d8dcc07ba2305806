"""``--help`` imports no torch: ``descentlab --help``, ``--version`` and every ``descentlab COMMAND --help``
answer from the parser alone (the work each command does is imported inside its run function). The values
the help texts quote are copies (descentlab.cli.defaults), pinned here to the API's own."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from descentlab.cli import SUBCOMMANDS, defaults

HEAVY = ("torch", "numpy", "matplotlib", "sklearn", "mnist1d", "tqdm", "descentlab.optim", "descentlab.tasks")

# In a fresh interpreter: every --help (and --version) in turn, then what they imported.
PROBE = """
import contextlib, io, json, sys
from descentlab.cli import build_parser, main

parser = build_parser()
commands = sorted(next(a for a in parser._actions if a.dest == "command").choices)
printed = {}
for argv in [["--help"], ["--version"], *([name, "--help"] for name in commands)]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(argv)
        except SystemExit as exit_:
            assert exit_.code == 0, (argv, exit_.code)
    printed[" ".join(argv)] = out.getvalue()
print(json.dumps({"commands": commands, "printed": printed, "modules": sorted(sys.modules)}))
"""


@pytest.fixture(scope="module")
def probe() -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_help_answers_without_importing_torch(probe):
    assert probe["commands"] == sorted(SUBCOMMANDS)
    for name in SUBCOMMANDS:
        assert probe["printed"][f"{name} --help"].startswith(f"usage: descentlab {name} ")
    assert probe["printed"]["--help"].startswith("usage: descentlab ")
    assert probe["printed"]["--version"].startswith("descentlab ")
    imported = [name for name in probe["modules"] if any(name == m or name.startswith(m + ".") for m in HEAVY)]
    assert imported == []


def test_the_help_quotes_the_defaults_it_shows(probe):
    race = probe["printed"]["race --help"]
    assert f"(default {defaults.RACE_EPOCHS})" in race and ",".join(defaults.RACE_OPTIMIZERS) in race
    assert "saddle, local-minima" in probe["printed"]["landscape --help"]


def test_the_copied_defaults_are_the_apis_own():
    from descentlab import bench, landscape, train
    from descentlab.lrfind import ramp
    from descentlab.racing import protocol
    from descentlab.study import suite
    from descentlab.tasks.surfaces import surface_names
    from descentlab.train import schedule

    assert (defaults.RACE_OPTIMIZERS, defaults.RACE_SEEDS, defaults.RACE_EPOCHS) == (
        protocol.DEFAULT_OPTIMIZERS, protocol.DEFAULT_SEEDS, protocol.DEFAULT_EPOCHS)
    assert (defaults.QUICK_LRS, defaults.QUICK_SEEDS, defaults.QUICK_EPOCHS) == (
        protocol.QUICK_LRS, protocol.QUICK_SEEDS, protocol.QUICK_EPOCHS)
    assert (defaults.SCHEDULES, defaults.WARMUP_FRACTION) == (schedule.SCHEDULES, schedule.WARMUP_FRACTION)
    assert (defaults.TRAIN_EPOCHS, defaults.DIVERGENCE_FACTOR) == (train.DEFAULT_EPOCHS, train.DEFAULT_FACTOR)
    assert defaults.SUITE_EPOCHS == {w.name: w.epochs for w in suite.SUITE}
    assert defaults.OWN_EPOCHS == suite.OWN_EPOCHS
    assert (defaults.LRFIND_START_LR, defaults.LRFIND_END_LR, defaults.LRFIND_STEPS, defaults.LRFIND_BETA,
            defaults.LRFIND_STOP_FACTOR, defaults.LRFIND_SUGGESTION_DIVISOR) == (
        ramp.START_LR, ramp.END_LR, ramp.STEPS, ramp.BETA, ramp.STOP_FACTOR, ramp.SUGGESTION_DIVISOR)
    assert (defaults.LANDSCAPE_OPTIMIZERS, defaults.LANDSCAPE_STEPS, defaults.LANDSCAPE_TOL) == (
        landscape.DEFAULT_OPTIMIZERS, landscape.DEFAULT_STEPS, landscape.DEFAULT_TOL)
    assert list(defaults.SURFACES) == surface_names()
    assert (defaults.BENCH_OPTIMIZERS, defaults.BENCH_ENGINES) == (bench.DEFAULT_OPTIMIZERS, bench.DEFAULT_ENGINES)
