"""``descentlab study``: end to end on the quick suite (killed with SIGKILL mid-way: no process left
behind; resumed: nothing trained twice, nothing lost; the report has the claim, the profiles and a table
per workload), the performance-profile score and the claim's verdict computed on hand-made numbers, and
bad input refused."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import descentlab
from descentlab.cli import main
from descentlab.racing.summary import Stat
from descentlab.study import profiles, run_study
from descentlab.study.analysis import Entry, WorkloadView
from test_race_kill import _alive, _descendants

WORKLOADS = "lstsq-linear,digits-mlp,descentlab.examples.spirals:make_task@2"
STUDY = ["study", "--quick", "--workloads", WORKLOADS, "--optimizers", "sgd,momentum,adam", "--jobs", "2", "--quiet"]
RACES = 3 * 5  # per workload: the race, Adam at 3 lrs x1 and 1e-3 x4 (--quick never extends a budget)


def _lines(path: Path) -> list[bytes]:
    try:
        return [line for line in path.read_bytes().split(b"\n")[:-1]]  # complete lines only
    except OSError:
        return []


def _specs(path: Path) -> list[tuple]:
    rows = [json.loads(line) for line in _lines(path)]
    return [(r["phase"], r["optimizer"], r["schedule"], r["lr"], r["seed"], r["batch_size"],
             tuple(sorted(r["hypers"].items()))) for r in rows]


@pytest.mark.slow
def test_quick_study_killed_and_resumed_adds_nothing_twice_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "study"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    study = subprocess.Popen([sys.executable, "-m", "descentlab", *STUDY, "--out", str(out)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    watched = out / "digits-mlp" / "race" / "results.jsonl"  # second workload: the first one's races are done
    started: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 120
        while len(_lines(watched)) < 3:
            assert study.poll() is None, study.communicate()[1].decode()
            assert time.monotonic() < deadline, "the study wrote no digits result in 120 s"
            started.update(_descendants(study.pid))
            time.sleep(0.02)
        started.update(_descendants(study.pid))
        study.send_signal(signal.SIGKILL)
        study.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _alive(started) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(started), f"processes left behind by the killed study: {_alive(started)}"
    finally:
        for pid in _alive(started):  # never leave one behind, even when the test fails
            os.kill(pid, signal.SIGKILL)
        if study.poll() is None:
            os.killpg(study.pid, signal.SIGKILL)
            study.wait()
        study.stderr.close()
    before = {path: _lines(path) for path in out.glob("*/*/results.jsonl")}
    finished_before = json.loads((out / "progress.json").read_text())["finished"]
    assert "lstsq-linear/race" in finished_before and "digits-mlp/race" not in finished_before
    assert not (out / "report.html").exists()

    assert main([*STUDY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    after = {path: _lines(path) for path in out.glob("*/*/results.jsonl")}
    assert len(after) == RACES
    for path, lines in before.items():
        assert after[path][:len(lines)] == lines, f"{path}: a finished run was rewritten or dropped"
    for path in after:
        specs = _specs(path)
        assert len(specs) == len(set(specs)), f"{path}: a run was added twice"
    trained_now = int(re.search(r"\((\d+) runs trained now", printed).group(1))
    assert trained_now == sum(len(v) for v in after.values()) - sum(len(v) for v in before.values())
    assert len(json.loads((out / "progress.json").read_text())["finished"]) == RACES

    page = (out / "report.html").read_text()
    assert "id='claim'" in page and "no verdict on the claim" in page
    assert 'id="plot-profile-seconds"' in page and 'id="plot-profile-steps"' in page
    assert 'id="plot-sensitivity"' in page
    for name in ("lstsq-linear", "digits-mlp", "descentlab.examples.spirals:make_task"):
        assert f"<h3>{name}</h3>" in page
    assert "http://" not in page and "https://" not in page  # self-contained
    for folder in ("lstsq-linear", "digits-mlp"):
        assert (out / folder / "race" / "report.html").exists()
    assert "no verdict on the claim" in printed and "holds" not in printed  # a demo states no verdict
    claim_json = json.loads((out / "claim.json").read_text())
    assert claim_json["demo"] is True and claim_json["verdict"] is None
    assert len(claim_json["entries"]) == 3 * 4


def test_a_finished_study_is_read_back_without_racing_again(tmp_path, monkeypatch):
    options = dict(optimizers="sgd,adam", seeds=1, quick=True, jobs=1, out=tmp_path / "s", progress=False)
    first = run_study("lstsq-linear@2", **options)
    races = [r for w in first.workloads for r in (w.race, *w.earlier, *w.claim.values())]
    assert len(races) == 1 + 4  # the race (--quick never extends it); Adam at 3 lrs x1 and at 1e-3 x4
    assert first.trained == sum(len(r.records) for r in races) > 0
    monkeypatch.setattr(descentlab.lab, "race", lambda *a, **k: pytest.fail("a finished race was run again"))
    again = run_study("lstsq-linear@2", **options)
    assert again.trained == 0
    assert [len(w.race.records) for w in again.workloads] == [len(w.race.records) for w in first.workloads]


def _entry(label: str, tuned: bool, test: float, seconds: float, steps: float, lr: float = 0.1) -> Entry:
    return Entry(label=label, optimizer=label.split()[0], tuned=tuned, lr=lr, test=Stat(test, 0.0, 3),
                 best_val=Stat(test, 0.0, 3), steps_to_target=steps, seconds_to_target=seconds,
                 reached=3 if math.isfinite(seconds) else 0, seeds=3)


def test_profile_and_algoperf_score_on_hand_made_times():
    times = {"a": {"w1": 1.0, "w2": 4.0, "w3": 10.0}, "b": {"w1": 2.0, "w2": 2.0, "w3": math.inf}}
    r = profiles.ratios(times)
    assert r == {"a": {"w1": 1.0, "w2": 2.0, "w3": 1.0}, "b": {"w1": 2.0, "w2": 1.0, "w3": math.inf}}
    assert profiles.profile(r["b"], [1.0, 1.9, 2.0, 4.0]) == [1 / 3, 1 / 3, 2 / 3, 2 / 3]
    assert profiles.score(r["a"]) == pytest.approx((3 + 2 + 3) / 9)  # (1/3)·mean of (4 − max(1, r))
    assert profiles.score(r["b"]) == pytest.approx((2 + 3 + 0) / 9)
    assert profiles.score({"w": math.inf}) == 0.0


def test_the_best_tuned_optimizer_is_picked_on_validation_not_on_test():
    a = _entry("sgd", True, 0.80, 1.0, 1)
    b = _entry("adam", True, 0.90, 1.0, 1)
    a = Entry(**{**a.__dict__, "best_val": Stat(0.95, 0.0, 3)})  # best on validation, worse on test
    assert WorkloadView("w", True, 0.5, 10, [a, b]).best_tuned() is a


@pytest.mark.parametrize("argv,needle", [
    (["--workloads", "nope"], "workloads: unknown task 'nope'"),
    (["--workloads", "mnist1d/transformer"], "'transformer' is not a model of 'mnist1d'"),
    (["--workloads", "lstsq@0"], "budget in 'lstsq@0'"),
    (["--workloads", "lstsq,lstsq"], "each workload once"),
    (["--workloads", "lstsq,lstsq-linear@3"], "'lstsq' and 'lstsq-linear@3' are the same workload (task 'lstsq', "
                                              "model 'linear')"),
    (["--workloads", "digits@5,mnist1d,digits-mlp"], "'digits@5' and 'digits-mlp' are the same workload"),
    (["--workloads", "no_such_module:task"], "cannot import module"),
    (["--seeds", "0"], "seeds: a count must be in"),
    (["--optimizers", "nope"], "nope"),
    (["--device", "tpu"], "tpu"),
    (["--jobs", "0"], "jobs must be an integer"),
])
def test_study_refuses_bad_input_in_one_line_before_any_work(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.setattr(descentlab.lab, "race", lambda *a, **k: pytest.fail("a race started"))
    out = tmp_path / "out"
    assert main(["study", "--quick", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("descentlab study: error: ") and needle in err[0], err
    assert not out.exists()


def test_a_workload_is_its_task_and_model_whatever_its_name():
    from descentlab.study.suite import Workload, check_distinct, parse_workloads

    assert [w.name for w in parse_workloads("digits,mnist1d-mlp,mnist1d/cnn", True)] == ["digits", "mnist1d-mlp",
                                                                                        "mnist1d-cnn"]
    mine = [Workload("m:f", "m:f", None, 3), Workload("m:f-mlp", "m:f", "mlp", 3)]
    check_distinct(mine)  # an own task's default model is not known before it is imported: compared as written
    with pytest.raises(ValueError, match="'m:f' and 'm:f-mlp' are the same workload"):
        check_distinct(mine, default_model=lambda task: "mlp")  # run_study passes the imported task's default


def test_a_full_study_refuses_one_seed_a_demo_takes_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(descentlab.lab, "race", lambda *a, **k: pytest.fail("a race started"))
    assert main(["study", "--seeds", "1", "--out", str(tmp_path / "full")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "seeds: the study judges the claim on intervals over paired seeds" in err[0], err
    assert not (tmp_path / "full").exists()
    from descentlab.study.config import make_study_config
    from descentlab.study.suite import default_suite

    assert make_study_config(default_suite(True), None, 1, True, "cpu").seeds == (0,)


def test_a_study_folder_of_an_earlier_format_is_refused_not_resumed(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(descentlab.lab, "race", lambda *a, **k: pytest.fail("a race started"))
    from descentlab.study.config import STUDY_FORMAT, make_study_config
    from descentlab.study.suite import parse_workloads

    out = tmp_path / "old"
    out.mkdir()
    config = make_study_config(parse_workloads("lstsq-linear@2", True), "sgd", 2, True, "cpu").to_json()
    (out / "study.json").write_text(json.dumps({**config, "format": STUDY_FORMAT - 1}))
    assert main(["study", "--quick", "--workloads", "lstsq-linear@2", "--optimizers", "sgd", "--seeds", "2",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "holds another study" in err[0] and "format" in err[0], err


def test_study_refuses_an_out_holding_another_study_or_other_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(descentlab.lab, "race", lambda *a, **k: pytest.fail("a race started"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("mine")
    assert main(["study", "--quick", "--out", str(other)]) == 2
    assert "no study.json" in capsys.readouterr().err
    held = tmp_path / "held"
    held.mkdir()
    (held / "study.json").write_text(json.dumps({"format": 1, "workloads": []}))
    assert main(["study", "--quick", "--out", str(held)]) == 2
    assert "holds another study" in capsys.readouterr().err
    assert sorted(p.name for p in held.iterdir()) == ["study.json"]
