"""race() with a fake training engine (fast): defaults, runs that raise or diverge at every lr, what
the report says about them, and the reproduce command for a user's own task."""

from __future__ import annotations

import math
import time

import pytest
import torch

import descentlab
from descentlab.racing import run_race
from descentlab.racing.record import FINAL, TUNE, Setting
from descentlab.report import format_table
from descentlab.train import RunResult


def result(status: str, history: list[dict], evaluate_test: bool, test: float, schedule: str, device: str,
           steps: int) -> RunResult:
    best = max(history, key=lambda e: (e["val_acc"], -e["val_loss"])) if history else \
        {"step": 0, "epoch": 0.0, "val_loss": None, "val_acc": None}
    last = history[-1] if history else best
    return RunResult(status=status, diverged_at_step=1 if status == "diverged" else None, diverge_reason=None,
                     epochs=last["epoch"], steps=steps, examples=0, wall_s=0.1, train_loss=None,
                     val_loss=last["val_loss"], val_acc=last["val_acc"], best_step=best["step"],
                     best_epoch=best["epoch"], best_val_loss=best["val_loss"], best_val_acc=best["val_acc"],
                     best_is_last=best is last, test_loss=test if evaluate_test else None,
                     test_acc=0.8 if evaluate_test else None, end_test_loss=test + 1 if evaluate_test else None,
                     end_test_acc=0.7 if evaluate_test else None, schedule=schedule, device=device,
                     history=history, config={})


def fake_run(task, *, model, optimizer, schedule, lr, batch_size, epochs, seed, evaluate_test, device,
             optimizer_options=None, patience=None):
    """A made-up run: "momentum" raises, "adagrad" diverges at every lr, the rest are best at lr 0.01."""
    if optimizer == "momentum":
        raise RuntimeError("boom <in the engine>")
    if optimizer == "adagrad":
        return result("diverged", [], evaluate_test, 0.0, schedule, device, 1)
    loss = 0.5 + abs(math.log10(lr) + 2) + 0.01 * seed
    history = [{"step": 10 * e, "epoch": float(e), "wall_s": 0.1 * e, "val_loss": loss + 1 / (1 + e),
                "val_acc": 0.9 - 0.1 / (1 + e) - 0.01 * abs(math.log10(lr) + 2)} for e in range(epochs + 1)]
    return result("ok", history, evaluate_test, loss, schedule, device, 10 * epochs)


def toy_task():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, generator=generator)
    y = (x[:, 0] > 0).long()
    return descentlab.tasks.from_tensors(x, y, x, y, x, y, model=lambda: torch.nn.Linear(3, 2), name="toy")


def test_a_built_in_task_gets_its_own_default_model(tmp_path):
    race = run_race("lstsq", optimizers="sgd", lrs=[0.01], seeds=1, epochs=1, out=tmp_path, jobs=1,
                    run_fn=fake_run, progress=False)
    assert race.config.model == "linear"  # lstsq's default, not mnist1d's mlp


def test_runs_that_raise_or_diverge_at_every_lr_are_recorded_and_reported(tmp_path):
    result = descentlab.race(toy_task(), optimizers="sgd,momentum,adagrad", lrs=[0.01, 0.1], seeds=2, epochs=2,
                             out=tmp_path, jobs=1, run_fn=fake_run, progress=False)
    tuning = {(r.optimizer, r.lr, r.seed): r for r in result.records if r.phase == TUNE}
    # v3: sgd's winner (0.01) sat on the grid's lower edge, so the grid grew to 0.001 (worse); the best two of
    # its three lrs (0.01, then 0.001 and 0.1 tie and the smaller wins) trained on the second tuning seed;
    # momentum and adagrad have nothing to extend or halve
    assert sorted(k for k in tuning if k[0] == "sgd") == [("sgd", 0.001, 0), ("sgd", 0.001, 1), ("sgd", 0.01, 0),
                                                            ("sgd", 0.01, 1), ("sgd", 0.1, 0)]
    assert len(tuning) == 5 + 2 + 2 and len(result.records) == 9 + 2  # finals only for sgd
    assert all(tuning["momentum", lr, 0].status == "error" for lr in (0.01, 0.1))
    assert "boom" in tuning["momentum", 0.01, 0].error
    assert all(tuning["adagrad", lr, 0].status == "diverged" for lr in (0.01, 0.1))
    assert {r.optimizer for r in result.records if r.phase == FINAL} == {"sgd"}
    assert result.selected == {("sgd", "constant"): Setting(0.01, 64), ("momentum", "constant"): None,
                               ("adagrad", "constant"): None}
    names = [s.optimizer for s in result.summary.arms]
    assert names == ["sgd", "momentum", "adagrad"]  # listed, not dropped
    table = format_table(result.summary)
    assert "all settings failed" in table and "all settings diverged" in table
    page = result.report_path.read_text()
    assert "boom &lt;in the engine&gt;" in page and "boom <in" not in page


def test_stopping_the_runs_early_leaves_no_worker_process(tmp_path):
    """A consumer that stops after the last run came back (the store's append failed, say) must not
    leave the pool's worker processes running."""
    import multiprocessing

    from descentlab.racing.record import RunSpec
    from descentlab.racing.runner import RaceContext, run_all

    def slow_at_0_1(task, **kwargs):
        if kwargs["lr"] == 0.1:
            time.sleep(60)
        return fake_run(task, **kwargs)

    # v3 forks one process per job, which exits with its job: a second, slow run keeps a worker busy
    context = RaceContext(run_fn=slow_at_0_1, task=toy_task(), model="mlp", epochs=1, device="cpu")
    runs = run_all([RunSpec(TUNE, "sgd", "constant", lr, 0, 8) for lr in (0.01, 0.1)], context, jobs=2)
    started = time.perf_counter()
    spec, record = next(runs)
    assert spec.lr == 0.01 and record.status == "ok" and multiprocessing.active_children()
    runs.close()
    assert multiprocessing.active_children() == [] and time.perf_counter() - started < 30


@pytest.mark.parametrize("batch_size", [16, "full"])
def test_a_users_own_task_is_reproduced_from_python_not_with_a_cli_task_it_does_not_have(tmp_path, batch_size):
    import ast
    import dataclasses
    import html

    from descentlab.racing import binding
    from descentlab.racing.protocol import make_config

    result = descentlab.race(toy_task(), optimizers="sgd,adam", lrs=[0.01, 0.1], seeds=2, epochs=1,
                             batch_size=batch_size, out=tmp_path / "toy", jobs=1, run_fn=fake_run, progress=False)
    page = html.unescape(result.report_path.read_text())
    assert "--task toy" not in page
    call = next(line for line in page.splitlines() if line.lstrip("<pre>").startswith("descentlab.race("))
    node = ast.parse(call.removeprefix("<pre>").removesuffix("</pre>"), mode="eval").body
    assert isinstance(node, ast.Call) and [ast.unparse(a) for a in node.args] == ["task"]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    # v3 binds a race to its data and model: the call, given the same task, binds to the same fingerprints
    again = make_config(task="toy", **kwargs)
    assert again.binding is None
    assert dataclasses.replace(again, binding=binding.of(toy_task(), again.model, again.optimizers)) == result.config


def test_a_run_fn_returning_something_else_is_a_recorded_error(tmp_path):
    race = run_race(toy_task(), optimizers="sgd", lrs=[0.1], seeds=1, epochs=1, out=tmp_path, jobs=1,
                    run_fn=lambda task, **kw: {"status": "ok"}, progress=False)
    assert [r.status for r in race.records] == ["error"] and "not a descentlab.train.RunResult" in race.records[0].error


def test_descentlab_race_is_a_plain_function_and_the_package_a_normal_module():
    import inspect
    import types

    import descentlab.racing

    assert inspect.isfunction(descentlab.race)
    assert type(descentlab.racing) is types.ModuleType  # no __class__ swap
    assert descentlab.race is descentlab.race  # importing submodules does not rebind it
