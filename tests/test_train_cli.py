"""``descentlab train`` and ``descentlab tasks``: files written, resume, one-line errors with exit 2."""

from __future__ import annotations

import json

import pytest

from descentlab.cli import main


def test_train_writes_metrics_result_and_checkpoints_and_resumes(tmp_path, capsys):
    out = tmp_path / "sgd"
    args = ["train", "--task", "digits", "--model", "mlp", "--hidden", "32", "--optimizer", "momentum",
            "--lr", "0.05", "--batch-size", "128", "--epochs", "2", "--seed", "0", "--out", str(out), "--quiet"]
    assert main(args) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("ok | 18 steps | 2 epochs") and str(out) in line
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 9, 18]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "ok" and result["test_acc"] is None
    assert result["config"]["optimizer"] == "momentum" and result["config"]["model_options"] == {"hidden": [32]}
    assert {"torch", "numpy", "descentlab", "python"} <= set(result["versions"])
    assert list(out.glob("ckpt-*.pt"))

    assert main([*args, "--resume", "--test"]) == 0
    assert "test acc" in capsys.readouterr().out
    assert json.loads((out / "result.json").read_text())["test_acc"] > 0.5


def test_full_batch_and_divergence_from_the_command_line(capsys):
    assert main(["train", "--task", "lstsq", "--optimizer", "gd", "--batch-size", "full", "--lr", "3",
                 "--steps", "300", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("diverged at step ")


@pytest.mark.parametrize(("args", "message"), [
    (["--task", "imagenet"], "unknown task 'imagenet'"),
    (["--optimizer", "adamm"], "unknown optimizer 'adamm'"),
    (["--model", "resnet", "--task", "digits"], "unknown model 'resnet'"),
    (["--lr", "fast"], "--lr must be a number, got 'fast'"),
    (["--batch-size", "many"], "--batch-size must be an integer or 'full', got 'many'"),
    (["--epochs", "-3", "--task", "digits"], "epochs must be an integer >= 1"),
    (["--hp", "momentum"], "--hp takes NAME=VALUE, got 'momentum'"),
    (["--task", "digits", "--task-option", "val_fraction=2"], "val_fraction must be a number strictly between"),
    (["--task", "digits", "--resume"], "resume=True (--resume) needs out (--out)"),
    (["--task", "digits", "--tensorboard"], "tensorboard=True (--tensorboard) needs out (--out)"),
    (["--task", "mypkg_absent.tasks:make_task"], "task 'mypkg_absent.tasks:make_task': cannot import module"),
    (["--task", "descentlab.examples.spirals:Spirals"], "task 'descentlab.examples.spirals:Spirals': Spirals() failed"),
    (["--task", "digits", "--schedule", "linear"], "schedule must be one of constant, cosine, warmup-cosine"),
    (["--task", "digits", "--device", "cuda:99"], "device 'cuda:99'"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys):
    assert main(["train", "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_out_holding_a_different_run_is_refused(tmp_path, capsys):
    out = str(tmp_path / "run")
    base = ["train", "--task", "lstsq", "--steps", "5", "--quiet", "--out", out]
    assert main([*base, "--lr", "0.1"]) == 0
    before = (tmp_path / "run" / "result.json").read_text()
    capsys.readouterr()
    assert main([*base, "--lr", "0.2"]) == 2
    err = capsys.readouterr().err
    assert "holds a different run" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "run" / "result.json").read_text() == before


def test_tasks_lists_tasks_and_models(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for word in ("mnist1d", "digits", "lstsq", "linear", "mlp*", "cnn"):
        assert word in out


def test_a_users_task_module_trains_with_a_schedule_and_reports_the_best_point(tmp_path, capsys):
    out = tmp_path / "spirals"
    assert main(["train", "--task", "descentlab.examples.spirals:make_task", "--optimizer", "adam", "--lr", "0.05",
                 "--batch-size", "50", "--epochs", "3", "--schedule", "warmup-cosine", "--test", "--quiet",
                 "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert "best val at epoch" in line and "at best" in line and "at end" in line
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["task"] == "spirals" and result["schedule"] == "warmup-cosine"
    assert result["test_acc"] is not None and result["end_test_acc"] is not None and result["device"] == "cpu"
