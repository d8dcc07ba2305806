"""race() with a fake training engine (fast): defaults, runs that raise or diverge at every lr, what
the report says about them, and the reproduce command for a user's own task."""

from __future__ import annotations

import math

import pytest
import torch

import descentlab
from descentlab.race.protocol import FINAL, TUNE


def fake_run(task, *, model, optimizer, lr, batch_size, epochs, seed, evaluate_test):
    """A made-up run: "momentum" raises, "adagrad" diverges at every lr, the rest are best at lr 0.01."""
    if optimizer == "momentum":
        raise RuntimeError("boom <in the engine>")
    if optimizer == "adagrad":
        return {"status": "diverged", "diverged_at_step": 1, "epochs": 0.0, "steps": 1, "wall_s": 0.01,
                "val_loss": None, "val_acc": None, "test_loss": None, "test_acc": None, "history": []}
    loss = 0.5 + abs(math.log10(lr) + 2) + 0.01 * seed
    history = [{"epoch": float(e), "wall_s": 0.1 * e, "val_loss": loss + 1 / (1 + e), "val_acc": 0.9 - 0.1 / (1 + e)}
               for e in range(epochs + 1)]
    return {"status": "ok", "diverged_at_step": None, "epochs": float(epochs), "steps": 10 * epochs, "wall_s": 0.1,
            "val_loss": history[-1]["val_loss"], "val_acc": history[-1]["val_acc"],
            "test_loss": loss if evaluate_test else None, "test_acc": 0.8 if evaluate_test else None,
            "history": history}


def toy_task():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, generator=generator)
    y = (x[:, 0] > 0).long()
    return descentlab.tasks.from_tensors(x, y, x, y, x, y, model=lambda: torch.nn.Linear(3, 2), name="toy")


def test_a_built_in_task_gets_its_own_default_model(tmp_path):
    result = descentlab.race("lstsq", optimizers="sgd", lrs=[0.01], seeds=1, epochs=1, out=tmp_path, jobs=1,
                             run_fn=fake_run, progress=False, report=False)
    assert result.config["model"] == "linear"  # lstsq's default, not mnist1d's mlp


def test_runs_that_raise_or_diverge_at_every_lr_are_recorded_and_reported(tmp_path):
    result = descentlab.race(toy_task(), optimizers="sgd,momentum,adagrad", lrs=[0.01, 0.1], seeds=2, epochs=2,
                             out=tmp_path, jobs=1, run_fn=fake_run, progress=False)
    tuning = {(r["optimizer"], r["lr"]): r for r in result.rows if r["phase"] == TUNE}
    assert len(tuning) == 6 and len(result.rows) == 6 + 2  # finals only for sgd
    assert all(tuning["momentum", lr]["status"] == "error" for lr in (0.01, 0.1))
    assert "boom" in tuning["momentum", 0.01]["error"]
    assert all(tuning["adagrad", lr]["status"] == "diverged" for lr in (0.01, 0.1))
    assert {r["optimizer"] for r in result.rows if r["phase"] == FINAL} == {"sgd"}
    assert result.selected == {"sgd": 0.01, "momentum": None, "adagrad": None}
    names = [s.optimizer for s in result.summary.optimizers]
    assert names == ["sgd", "momentum", "adagrad"]  # listed, not dropped
    table = descentlab.race.format_table(result.summary)
    assert "all lrs failed" in table and "all lrs diverged" in table
    page = result.report_path.read_text()
    assert "boom &lt;in the engine&gt;" in page and "boom <in" not in page


def test_stopping_the_runs_early_leaves_no_worker_process(tmp_path):
    """A consumer that stops after the last run came back (the store's append failed, say) must not
    leave the pool's worker processes running."""
    import multiprocessing

    from descentlab.race.runner import run_all

    context = {"run_fn": fake_run, "task": None, "model": "mlp", "epochs": 1, "batch_size_for": lambda name: 8,
               "final_phase": FINAL}
    runs = run_all([(TUNE, "sgd", 0.01, 0)], context, jobs=2)
    _, record = next(runs)
    assert record["status"] == "ok" and multiprocessing.active_children()
    runs.close()
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("batch_size", [16, "full"])
def test_a_users_own_task_is_reproduced_from_python_not_with_a_cli_task_it_does_not_have(tmp_path, batch_size):
    import ast
    import html

    from descentlab.race.protocol import make_config

    result = descentlab.race(toy_task(), optimizers="sgd,adam", lrs=[0.01, 0.1], seeds=2, epochs=1,
                             batch_size=batch_size, out=tmp_path / "toy", jobs=1, run_fn=fake_run, progress=False)
    page = html.unescape(result.report_path.read_text())
    assert "--task toy" not in page
    call = next(line for line in page.splitlines() if line.lstrip("<pre>").startswith("descentlab.race("))
    node = ast.parse(call.removeprefix("<pre>").removesuffix("</pre>"), mode="eval").body
    assert isinstance(node, ast.Call) and [ast.unparse(a) for a in node.args] == ["task"]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    assert kwargs.pop("out") == str(tmp_path / "toy")
    assert make_config(task="toy", **kwargs).to_json() == result.config
