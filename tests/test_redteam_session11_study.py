"""Red-team findings (session 11) on the commands other than ``race``: study, guide, train, lrfind.

Each test states what a user would expect; each fails on the code it was written against."""

from __future__ import annotations

import json

import torch

from descentlab.cli import main
from descentlab.racing.record import FINAL, TUNE, RunRecord
from descentlab.racing.summary import Stat
from descentlab.study import verdict
from descentlab.study.analysis import Entry, WorkloadView, entry

# ---- study: a diverged seed of untuned Adam ------------------------------------------------------------------

def _record(optimizer: str, lr: float, seed: int, test_acc: float | None, status: str = "ok",
            phase: str = FINAL) -> RunRecord:
    history = [{"epoch": float(e), "step": 10 * e, "val_acc": 0.5 + 0.04 * e, "val_loss": 1.0, "wall_s": 0.1 * e}
               for e in range(11)] if status == "ok" else []
    return RunRecord(phase, optimizer, "constant", lr, seed, 64, status, epochs=10.0, steps=100, wall_s=1.0,
                     best_val_acc=0.9 if status == "ok" else None, best_val_loss=0.3 if status == "ok" else None,
                     test_acc=test_acc, test_loss=0.3 if status == "ok" else None, history=history,
                     diverged_at_step=None if status == "ok" else 40)


def test_untuned_adam_that_diverged_on_one_seed_is_not_called_within_tolerance():
    # The tuned best (sgd) finished all three seeds. Untuned Adam at lr 1e-3 matched it on seeds 0 and 1 and
    # DIVERGED on seed 2 (recorded as such in its results.jsonl). The claim "Adam at 1e-3 is a good default"
    # cannot be "within tolerance" on this workload: one run in three blew up. The race itself ranks an arm
    # that diverged on some seeds after every arm that finished them all (racing/summary.py); the study's
    # judge silently drops the diverged seed from the pairing (analysis.entry keeps only r.ok runs in
    # per_seed) and judges Adam on the two survivors, whose identical gaps give a zero-width interval at 0.
    best_runs = [_record("sgd", 0.1, s, 0.90) for s in range(3)]
    tuning = [_record("sgd", lr, 0, 0.5, phase=TUNE) for lr in (0.01, 0.1, 1.0)]
    adam_runs = [_record("adam", 1e-3, 0, 0.90), _record("adam", 1e-3, 1, 0.90),
                 _record("adam", 1e-3, 2, None, status="diverged")]
    best = entry("sgd", "sgd", True, 0.1, best_runs, True, 0.8, 10, 1, tuning)
    adam = entry("adam lr=0.001 (untuned)", "adam", False, 1e-3, adam_runs, True, 0.8, 10, 1)
    judged = verdict.judge(WorkloadView("w", True, 0.8, 10, [best, adam]), adam)
    assert judged.verdict != "within", (
        f"Adam diverged on 1 of 3 seeds yet the claim calls it within tolerance (paired_seeds="
        f"{judged.paired_seeds}, gap {judged.gap} [{judged.gap_low}, {judged.gap_high}], adam_test "
        f"{judged.adam_test} over the finished seeds only)")


# ---- guide: section 8 read from a real study's claim.json ----------------------------------------------------

def _claim_entry(label: str, tuned: bool, per_seed: dict[int, float], lr: float = 0.1, multiple: int = 1,
                 tuning_epochs: float = 0.0) -> Entry:
    values = list(per_seed.values())
    return Entry(label=label, optimizer=label.split()[0], tuned=tuned, lr=lr, test=Stat.of(values),
                 best_val=Stat.of(values), steps_to_target=10.0, seconds_to_target=1.0, reached=len(values),
                 seeds=len(values), budget_epochs=10 * multiple, multiple=multiple, tuning_epochs=tuning_epochs,
                 per_seed=dict(per_seed))


def test_guide_section_8_counts_workloads_not_entries_and_states_the_tolerance_in_words(tmp_path, capsys):
    # What `descentlab study` writes for two workloads: Adam 1e-3 at x1 and at x4 on each (the study always
    # runs both), so claim.json holds 4 entries at lr 1e-3 for 2 workloads. `descentlab guide --study DIR`
    # then says "within {JSON of claim.json's tolerance dict} ... on 0 of 4 workloads": the count is of
    # entries (two budgets per workload), and the tolerance is a JSON blob pasted into the sentence
    # (guide/claim.py: load_claim json.dumps the dict; claim_sentences counts len(entries) per lr).
    best = {0: 0.90, 1: 0.91, 2: 0.92}
    adam = {0: 0.70, 1: 0.71, 2: 0.72}
    views = [WorkloadView(name, True, 0.5, 10, [
        _claim_entry("sgd", True, best, tuning_epochs=90.0),
        _claim_entry("adam lr=0.001 (untuned)", False, adam, lr=1e-3, multiple=1),
        _claim_entry("adam lr=0.001 x4 (untuned)", False, adam, lr=1e-3, multiple=4)]) for name in ("a", "b")]
    study = tmp_path / "study"
    study.mkdir()
    verdict.write(study / "claim.json", verdict.build(views, [{"workload": "a", "epochs": 10},
                                                              {"workload": "b", "epochs": 10}], demo=False))
    page = tmp_path / "guide.html"
    assert main(["guide", "--study", str(study), "--out", str(page)]) == 0
    capsys.readouterr()
    from descentlab.guide import load_claim
    from descentlab.guide.claim import claim_sentences

    sentences = claim_sentences(load_claim(study))
    first = next(s for s in sentences if s.startswith("Untuned Adam at lr 0.001"))
    problems = []
    if "of 2 workloads" not in first:
        problems.append("the study has 2 workloads")
    if "{" in first or "max_gap" in first:
        problems.append("the tolerance is pasted in as JSON")
    assert not problems, f"{'; '.join(problems)}: {first!r}"


# ---- train: --optimizer gd ----------------------------------------------------------------------------------

def test_train_optimizer_gd_is_full_batch_gradient_descent_or_refused(tmp_path, capsys):
    # The registry marks gd as full batch (docs/optimizers.md: "g over the whole training set"), the race gives
    # it the full batch and the landscape page treats it as noise-free. `descentlab train --optimizer gd` with
    # the default --batch-size 64 silently trains minibatch SGD (7 steps per epoch on lstsq) and records it
    # as "optimizer": "gd". Expected: full batch (1 step per epoch) or a one-line refusal naming the clash.
    out = tmp_path / "run"
    code = main(["train", "--task", "lstsq", "--optimizer", "gd", "--lr", "0.1", "--epochs", "2", "--quiet",
                 "--out", str(out)])
    if code == 2:  # refused: fine, if it says why in one line
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "gd" in err[0] and "batch" in err[0], err
        return
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 2, f"'gd' trained {result['steps']} minibatch steps in 2 epochs (minibatch SGD)"


# ---- lrfind: a loss below zero -------------------------------------------------------------------------------

def _regression(shift: float):
    from descentlab.tasks import from_tensors

    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 1, generator=g)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, 8, generator=g)
        return x, x @ w + 0.01 * torch.randn(n, 1, generator=g)

    (xt, yt), (xv, yv), (xs, ys) = split(400), split(200), split(200)
    return from_tensors(xt, yt, xv, yv, xs, ys, kind="regression", name=f"shift{shift:g}",
                        loss=lambda p, t: torch.nn.functional.mse_loss(p, t) + shift,
                        model=lambda: torch.nn.Linear(8, 1))


def test_lrfind_does_not_stop_at_once_when_the_loss_is_negative():
    # A Gaussian negative log-likelihood (or any loss with a constant offset) goes below zero; the race treats
    # such losses (a41a43d). The range test's stop rule "smoothed loss > 4x its best" is always true once the
    # best is negative (4·best < best <= current), so the ramp stops the moment the smoothed loss crosses zero,
    # reports "smoothed loss above 4x its best", and suggests an lr millions of times too small. Same data,
    # same model, the loss shifted by -10 (same gradients, same training): the suggestion should barely move.
    from descentlab.lrfind import lr_find

    plain = lr_find(_regression(0.0), optimizer="sgd", batch_size=32)
    shifted = lr_find(_regression(-10.0), optimizer="sgd", batch_size=32)
    assert plain.suggestion is not None and shifted.suggestion is not None
    ratio = shifted.suggestion / plain.suggestion
    assert 0.1 < ratio < 10, (
        f"loss shifted by -10: ramp stopped after {len(shifted.lrs)} of 100 steps ({shifted.stop_reason}), "
        f"suggestion {shifted.suggestion:.3g} vs {plain.suggestion:.3g} unshifted")


# ---- study: the tuned best is an arm that diverged on most seeds ---------------------------------------------

def test_the_study_tuned_best_is_not_an_arm_whose_selected_setting_diverged_on_most_seeds():
    # The race ranks an optimizer whose selected setting diverged on some confirmation seeds after every one that
    # finished them all (racing/summary.py, a41a43d). The study picks its "tuned best" — the reference of the
    # claim and of the budget rule — by the mean best validation over the *finished* seeds only
    # (analysis.WorkloadView.best_tuned, run.tuned_best): momentum, finished on 1 seed of 3 (2 diverged), beats
    # sgd, finished on all 3. Untuned Adam is then compared on one paired seed with an arm that blew up twice.
    def runs(optimizer: str, lr: float, accs: list[float | None]) -> list[RunRecord]:
        out = []
        for seed, acc in enumerate(accs):
            r = _record(optimizer, lr, seed, acc, status="ok" if acc is not None else "diverged")
            if acc is not None:
                r.best_val_acc = acc
            out.append(r)
        return out

    sgd = entry("sgd", "sgd", True, 0.1, runs("sgd", 0.1, [0.90, 0.90, 0.90]), True, 0.8, 10, 1)
    momentum = entry("momentum", "momentum", True, 0.3, runs("momentum", 0.3, [0.93, None, None]), True, 0.8, 10, 1)
    adam = entry("adam lr=0.001 (untuned)", "adam", False, 1e-3, runs("adam", 1e-3, [0.90, 0.90, 0.90]), True, 0.8,
                 10, 1)
    view = WorkloadView("w", True, 0.8, 10, [sgd, momentum, adam])
    best = view.best_tuned()
    judged = verdict.judge(view, adam)
    assert best is not None and best.optimizer == "sgd", (
        f"tuned best = {best.optimizer if best else None} (diverged on 2 of 3 seeds); Adam judged on "
        f"{judged.paired_seeds} paired seed(s): {judged.verdict}")


# ---- study: resumed on changed data ---------------------------------------------------------------------------

TASK_MODULE = '''
import os
import torch
from descentlab.tasks import from_tensors

def make_task():
    g = torch.Generator().manual_seed(int(os.environ.get("RT_STUDY_DATA_SEED", "0")))
    x = torch.randn(160, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return from_tensors(x[:100], y[:100], x[100:130], y[100:130], x[130:], y[130:],
                        model=lambda: torch.nn.Linear(4, 2), name="rt-study-task")
'''


def test_a_study_resumed_on_changed_task_data_is_refused_not_mixed(tmp_path, monkeypatch):
    # A race folder is bound to its data (a resume on changed data is refused). A study is several race
    # folders: after an interruption, `descentlab study` reads the finished races back without checking their
    # data (run._read) and starts the remaining ones (Adam's) as new races, bound to whatever the task now
    # returns. So untuned Adam trained on the NEW data is paired by seed with a tuned best trained on the OLD
    # data, and claim.json judges the claim on that mix. Expected: the resume is refused in one line, before
    # any run, as a race's is.
    import descentlab.lab
    from descentlab.study import run_study

    (tmp_path / "rt_study_task.py").write_text(TASK_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("RT_STUDY_DATA_SEED", "0")
    real_race = descentlab.lab.race
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(kwargs.get("out"))
        if len(calls) == 2:  # the tuned race finished; the study is killed as Adam's first race starts
            raise KeyboardInterrupt
        return real_race(*args, **kwargs)

    out = tmp_path / "study"
    options = dict(optimizers="sgd", seeds=2, quick=True, jobs=1, out=out, progress=False, report=False)
    monkeypatch.setattr(descentlab.lab, "race", interrupted)
    try:
        run_study("rt_study_task:make_task@2", **options)
    except KeyboardInterrupt:
        pass
    assert len(calls) == 2 and (out / "progress.json").exists()
    monkeypatch.setattr(descentlab.lab, "race", real_race)
    monkeypatch.setenv("RT_STUDY_DATA_SEED", "1")  # the user's task now returns other data
    try:
        run_study("rt_study_task:make_task@2", **options)
    except ValueError as error:
        assert "data" in str(error) or "fingerprint" in str(error), error
        return
    folder = out / "rt_study_task_make_task"
    tuned = json.loads((folder / "race" / "race.json").read_text())["binding"]["data_sha256"]
    adam = json.loads((folder / "adam-lr0.001-e2" / "race.json").read_text())["binding"]["data_sha256"]
    raise AssertionError(f"the study resumed on changed data and judged the claim on runs of two datasets: the "
                         f"tuned race's data {tuned[:12]}, untuned Adam's {adam[:12]}")


# ---- bad input: one line naming the argument and the value, before any work -----------------------------------

def test_bench_refuses_a_repeated_optimizer_or_layout_as_it_refuses_a_repeated_engine(monkeypatch, capsys):
    # `bench --engine eager,eager` is refused in one line; `--optimizers sgd,sgd` and `--layouts 1,1` are accepted
    # and benchmark the same thing twice (two identical rows in the table and in --json).
    import descentlab.bench

    monkeypatch.setattr(descentlab.bench, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("bench ran")))
    base = ["bench", "--params", "1k", "--repeats", "1", "--no-train", "--engine", "eager"]
    for extra in (["--optimizers", "sgd,sgd", "--layouts", "1"], ["--optimizers", "sgd", "--layouts", "1,1"]):
        try:
            code = main([*base, *extra])
        except AssertionError:
            code = None
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and extra[1 if "," in extra[1] else 3] in err[0], (extra, code, err)


def test_train_hp_lr_is_refused_naming_hp_not_with_a_python_signature_error(tmp_path, capsys):
    # `--hp lr=0.5` (lr is set by --lr) ends with "descentlab.optim.registry.Entry.create() got multiple values
    # for keyword argument 'lr'": an internal signature, not the option the user typed.
    code = main(["train", "--task", "lstsq", "--epochs", "1", "--quiet", "--hp", "lr=0.5",
                 "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--hp" in err[0] and "Entry.create()" not in err[0], err[0]


def test_study_refuses_the_same_workload_under_two_names(tmp_path, monkeypatch, capsys):
    # `--workloads lstsq,lstsq` is refused ("each workload once"), but `digits@120,digits-mlp` — the same task,
    # the same model (digits' default is mlp), the same budget — is accepted and raced twice, and the overall
    # verdict then counts one workload as two of its m workloads.
    import descentlab.lab

    monkeypatch.setattr(descentlab.lab, "race", lambda *a, **k: (_ for _ in ()).throw(AssertionError("a race ran")))
    out = tmp_path / "s"
    try:
        code = main(["study", "--workloads", "digits@120,digits-mlp", "--out", str(out)])
    except AssertionError:
        code = None
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "workloads" in err[0], (code, err)
