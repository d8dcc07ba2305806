"""``--quick`` swaps in small defaults, and options given explicitly still win, in every command that has it
(race, study, bench): what the work is given is what the user typed, the quick default only where they typed
nothing. The work itself is stubbed; everything up to it (parsing, validation, the config written) is real."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from descentlab import bench
from descentlab.cli import build_parser, main


def test_the_commands_with_quick_are_the_ones_tested_here():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert sorted(name for name, sub in commands.items() if "--quick" in sub._option_string_actions) == [
        "bench", "race", "study"]


@pytest.fixture
def bench_calls(monkeypatch) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(bench, "run", lambda *args, **kwargs: calls.append(args) or {"rows": []})
    monkeypatch.setattr(bench, "table", lambda result: "")
    monkeypatch.setattr(bench, "targets_text", lambda result: "")
    return calls


def test_bench_quick_alone_is_the_small_benchmark(bench_calls):
    assert main(["bench", "--quick", "--optimizers", "sgd", "--engine", "eager"]) == 0
    (_names, layouts, numel, repeats, _engines), = bench_calls
    assert (numel, layouts, repeats) == (2_000_000, [1, 200], 5)


def test_bench_explicit_options_win_over_quick(bench_calls):
    argv = ["bench", "--quick", "--optimizers", "sgd", "--engine", "eager", "--params", "3000", "--layouts",
            "7,3000", "--repeats", "9"]
    assert main(argv) == 0
    (_names, layouts, numel, repeats, _engines), = bench_calls
    assert (numel, layouts, repeats) == (3000, [7, 3000], 9)  # a layout above 200 included: it was asked for


def test_bench_quick_with_a_huge_params_is_refused_not_shrunk(bench_calls, capsys):
    assert main(["bench", "--quick", "--params", "1e30"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("descentlab bench: error: --params 1e+30"), err
    assert bench_calls == []


@pytest.fixture
def no_training(monkeypatch) -> None:
    monkeypatch.setattr("descentlab.racing.core._run_all", lambda *args, **kwargs: 0)
    monkeypatch.setattr("descentlab.report.write_report", lambda out, *args, **kwargs: Path(out) / "report.html")


def _race_config(tmp_path: Path, *options: str) -> dict[str, Any]:
    out = tmp_path / "race"
    argv = ["race", "--quick", "--task", "lstsq", "--optimizers", "sgd", "--jobs", "1", "--quiet", *options]
    assert main([*argv, "--out", str(out)]) == 0
    return json.loads((out / "race.json").read_text())


def test_race_quick_alone_is_the_demo_grid(tmp_path, no_training):
    config = _race_config(tmp_path)
    assert (config["lrs"], config["seeds"], config["epochs"]) == ([1e-3, 1e-2, 1e-1], [0, 1], 3)


def test_race_explicit_options_win_over_quick(tmp_path, no_training):
    config = _race_config(tmp_path, "--lrs", "0.5", "--seeds", "4", "--epochs", "7")
    assert (config["lrs"], config["seeds"], config["epochs"]) == ([0.5], [0, 1, 2, 3], 7)


@pytest.fixture
def study_races(monkeypatch) -> list[dict[str, Any]]:
    """Each race the study would run: its folder and options (none is run)."""
    from descentlab.racing import RaceConfig, summarize
    from descentlab.study.run import RaceData

    races: list[dict[str, Any]] = []

    def no_race(out: Any, folder: str, finished: Any, workload: Any, race: Any, **options: Any) -> Any:
        races.append({"folder": folder, "epochs": options["epochs"], "seeds": options["seeds"]})
        config = RaceConfig(epochs=options["epochs"])  # the study reads the race's budget back from it
        return RaceData(folder, config, [], summarize(config, [])), 0

    monkeypatch.setattr("descentlab.study.run._race", no_race)
    monkeypatch.setattr("descentlab.report.study_page.build_study_html", lambda result: "<html></html>")
    return races


def test_study_quick_alone_is_the_demo_budget(tmp_path, study_races):
    assert main(["study", "--quick", "--workloads", "lstsq-linear", "--quiet", "--out", str(tmp_path / "s")]) == 0
    # the demo budget (5 epochs, 2 seeds); untuned Adam also at x4 of it (study v2's budget axis)
    assert {(r["epochs"], tuple(r["seeds"])) for r in study_races} == {(5, (0, 1)), (20, (0, 1))}


def test_study_explicit_options_win_over_quick(tmp_path, study_races):
    out = tmp_path / "s"
    argv = ["study", "--quick", "--workloads", "lstsq-linear@4", "--seeds", "3", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    assert {(r["epochs"], tuple(r["seeds"])) for r in study_races} == {(4, (0, 1, 2)), (16, (0, 1, 2))}
    assert json.loads((out / "study.json").read_text())["workloads"][0]["epochs"] == 4
