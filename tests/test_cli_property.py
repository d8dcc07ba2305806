"""Property: whatever options and values a user types, every command ends with exit status 0, or with
exit status 2 and exactly one line on stderr — never a traceback — and a command it refuses changes no
file (an existing ``--out`` it refuses is left exactly as it was).

Hypothesis draws argument lists from each subcommand's own parser (every option it has, so a new option
is covered without touching this file) with values a user might type: numbers of every sign and size,
NaN, inf, empty strings, unicode, names good and bad, and paths that are files, directories, missing,
under a file, unwritable, or inside /proc and /sys. ``main(argv)`` runs in this process; where the
values are valid, the expensive part is stubbed (the training loop trains nothing but still evaluates
and writes its files, a landscape runs at most 3 steps and writes a placeholder picture, a race trains
no run and writes no report, a study runs no race and draws nothing, a range test takes 3 steps and draws a
placeholder, the benchmark times nothing), so everything up to the work — parsing,
validation, the output-path checks, the files a run writes first — is the real code.

Examples: ``EXAMPLES`` per command (100; ``DESCENTLAB_CLI_EXAMPLES=800`` for a longer hunt), 8 commands:
about 35 s in all on the shared 2-core machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from descentlab import bench, landscape
from descentlab.atomic import atomic_write_bytes
from descentlab.cli import build_parser, main
from descentlab.train import loop

EXAMPLES = int(os.environ.get("DESCENTLAB_CLI_EXAMPLES", "100"))

NUMBERS = ["0", "1", "2", "3", "-1", "-3", "0.5", "-0.5", "1e-3", "0.1", "nan", "-nan", "NaN", "inf", "-inf",
           "1e308", "1e400", "-1e400", "99999999999999999999999", "-99999999999999999999999", "18446744073709551616",
           "0x10", "1_000", " 3 ", "", " ", "full", "none", "1,2", ",", "1,,2", "3,", "nan,1", "0.001,0.1", "2,inf",
           "1e30", "1e9", "20M", "1k", "1G", "-2k", "1.5", "1,0.001", "-1e9,3", "0,0"]
WORDS = ["adam", "sgd", "gd", "momentum,adam", "adam,adam", "torch.optim:LBFGS", "torch.optim:Adam", "nope",
         "os:system", "nope.mod:Thing", "mnist1d", "digits", "lstsq", "mlp", "linear", "cnn", "saddle", "bowl",
         "rosenbrock", "rastrigin", "local-minima", "ünïcödé", "名前", "\U0001f600", "a=1", "momentum=0.9",
         "betas=(0.9,0.99)", "eps=-1", "lr=nan", "weight_decay=inf", "nesterov=True", "val_fraction=2",
         "val_fraction=0.5", "n_train=99999999999999", "dim=100000000", "num_samples=10000000000000",
         "cache_dir=afile", "adam=0.1", "sgd=-1", "gd=nan", "=", "adam=", "--", "-x", "auto", "compiled", "eager"]
PATHS = ["afile", "afile/sub", "afile/x.png", "afile/x.json", "adir", "adir/x.png", "adir/mine.txt", "missing",
         "missing/deep/x.png", "x.png", "x.json", "x.gif", "ro", "ro/x", "ro/x.png", "/proc/descentlab-x",
         "/proc/descentlab-x.png", "/proc/x/y.json", "/sys/descentlab", "/sys/x.png", "", ".", "..", "a" * 300,
         "a" * 300 + ".png", "ünï/x.png", "race_dir", "run_dir", "run_dir/x.png", "dangling", "dangling.png"]
PATH_OPTIONS = {"--out", "--json"}


def _sandbox(base: Path) -> None:
    """The files and folders the drawn paths name (relative paths resolve here)."""
    (base / "afile").write_text("a file, not a directory\n")
    (base / "adir").mkdir()
    (base / "adir" / "mine.txt").write_text("the user's own file\n")
    (base / "ro").mkdir()
    (base / "race_dir").mkdir()
    (base / "race_dir" / "results.jsonl").mkdir()  # a results file that is a directory
    (base / "run_dir").mkdir()
    (base / "run_dir" / "config.json").mkdir()  # a run's config that is a directory
    (base / "dangling").symlink_to(base / "nowhere")
    (base / "dangling.png").symlink_to(base / "nowhere.png")
    (base / "ro").chmod(0o555)  # unwritable (except for root, which /proc and /sys cover)


def _snapshot(base: Path) -> dict[str, Any]:
    """Every entry under ``base``: its type, mode and bytes (mtimes left out: probes touch directories)."""
    found: dict[str, Any] = {}
    for root, dirs, files in os.walk(base):
        for name in dirs + files:
            path = Path(root) / name
            info = path.lstat()
            content = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
            found[str(path.relative_to(base))] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), content)
    return found


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


SUBPARSERS = _subparsers()


def _value(option: str, action: argparse.Action) -> st.SearchStrategy[str]:
    anything = st.one_of(st.sampled_from(NUMBERS), st.sampled_from(WORDS), st.sampled_from(PATHS),
                         st.text(max_size=12))
    if action.choices:
        return st.one_of(st.sampled_from([str(c) for c in action.choices]), anything)
    if option in PATH_OPTIONS:
        return st.one_of(st.sampled_from(PATHS), anything)
    if action.default not in (None, [], False):  # the default, written out: a valid value now and then
        return st.one_of(st.just(str(action.default)), anything)
    return anything


@st.composite
def _argv(draw: st.DrawFn, command: str) -> list[str]:
    parser = SUBPARSERS[command]
    actions = [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    argv = [command]
    if actions:
        for action in draw(st.lists(st.sampled_from(actions), max_size=6)):
            option = draw(st.sampled_from(action.option_strings))
            argv.append(option)
            if action.nargs != 0:
                argv.append(draw(_value(option, action)))
    if draw(st.integers(0, 9)) == 0:  # now and then something no parser expects
        argv.append(draw(st.sampled_from(["--nope", "extra", "-", "--out"])))
    return argv


# -- stubs: the work itself, where the values were valid ---------------------------------------------
def _no_training(self: Any) -> None:
    """The loop's first evaluation and checkpoint (real files in --out), no steps."""
    self.started = time.perf_counter() - self.track.wall_s  # the loop's state is its RunTrack now
    if not self.track.history:
        self.record(gnorm=None)


def _placeholder_picture(result: Any, path: Any, **options: Any) -> Path:
    atomic_write_bytes(path, b"placeholder")
    return Path(path)


@pytest.fixture(scope="module")
def stubbed() -> Iterator[None]:
    from descentlab.lrfind import lr_find as real_lr_find

    real_trajectory = landscape.trajectory
    real_make_model = loop.Task.make_model

    def short_trajectory(surface: Any, optimizer: str, *, steps: Any = 200, **options: Any) -> Any:
        valid = isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1
        return real_trajectory(surface, optimizer, steps=min(steps, 3) if valid else steps, **options)

    def small_model(self: Any, model_name: Any = None, seed: int = 0, **options: Any) -> Any:
        if torch.empty(0).device.type == "meta":  # the footprint's estimate: the model asked for, shapes only
            return real_make_model(self, model_name, seed, **options)
        return real_make_model(self, "linear", seed)

    def short_range_test(*args: Any, max_steps: Any = None, **options: Any) -> Any:
        return real_lr_find(*args, max_steps=3, **options)

    def no_race(out: Any, folder: str, *args: Any, **options: Any) -> Any:
        from descentlab.racing import RaceConfig, summarize
        from descentlab.study.run import RaceData

        return RaceData(folder, RaceConfig(), [], summarize(RaceConfig(), [])), 0

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop._Loop, "run", _no_training)
        patch.setattr(loop.Task, "make_model", small_model)
        patch.setattr(landscape, "trajectory", short_trajectory)
        patch.setattr(landscape, "save_png", _placeholder_picture)
        patch.setattr(landscape, "save_gif", _placeholder_picture)
        patch.setattr("descentlab.racing.core._run_all", lambda *args, **kwargs: 0)
        patch.setattr("descentlab.report.write_report", lambda out, *args, **kwargs: Path(out) / "report.html")
        patch.setattr("descentlab.lrfind.lr_find", short_range_test)
        patch.setattr("descentlab.lrfind.auto.lr_find", short_range_test)
        patch.setattr("descentlab.study.run._race", no_race)
        patch.setattr("descentlab.report.study_page.build_study_html", lambda result: "<html></html>")
        patch.setattr("descentlab.lrfind.plot.save", _placeholder_picture)
        patch.setattr(bench, "run", lambda *args, **kwargs: {"rows": []})
        patch.setattr(bench, "table", lambda result: "")
        patch.setattr(bench, "targets_text", lambda result: "")
        patch.delenv("DESCENTLAB_DEBUG", raising=False)
        yield


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse: --help, --version, usage errors
            code = exit_.code if isinstance(exit_.code, int) else 2
    return code, err.getvalue()


@pytest.mark.parametrize("command", sorted(SUBPARSERS))
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_command_line_exits_0_or_2_with_one_line_and_a_refusal_changes_nothing(stubbed, command, data):
    argv = data.draw(_argv(command), label="argv")
    base = Path(tempfile.mkdtemp(prefix="cli-property-"))
    cwd = os.getcwd()
    try:
        _sandbox(base)
        before = _snapshot(base)
        os.chdir(base)
        code, err = _run(argv)
        os.chdir(cwd)
        event(f"exit {code}")
        assert "Traceback" not in err, err
        assert code in (0, 2), f"exit status {code}: {err}"
        if code == 2:
            lines = err.splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"descentlab {command}: error: "), err
            assert _snapshot(base) == before  # a refused command changes nothing
    finally:
        os.chdir(cwd)
        (base / "ro").chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)
