"""The training loop: GD on least squares, minibatch vs full batch, determinism, divergence,
custom optimizers and tasks, argument errors, and MNIST-1D accuracy."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from torch import nn

from descentlab.tasks import from_tensors, get_task
from descentlab.train import METRIC_KEYS, train


@pytest.fixture(scope="module")
def digits():
    return get_task("digits")


@pytest.fixture(scope="module")
def lstsq():
    return get_task("lstsq")


def weights(result):
    return [t.clone() for t in result.state_dict().values()]


def same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(weights(a), weights(b), strict=True))


def curve(result):
    return [{k: v for k, v in record.items() if k != "wall_s"} for record in result.history]


@pytest.mark.parametrize("lr", [0.5, 1.0, 1.9])
def test_gd_on_lstsq_reaches_the_exact_solution_below_2_over_L(lstsq, lr):
    assert lstsq.info["L"] == pytest.approx(1.0)
    result = train(lstsq, model="linear", optimizer="gd", lr=lr, batch_size=None, steps=600, eval_every=100,
                   keep_model=True)
    assert result.status == "ok" and result.steps == 600
    w = result.state_dict()["1.weight"][0]
    solution = torch.from_numpy(lstsq.info["solution"])
    assert (w - solution).abs().max() < 1e-6


@pytest.mark.parametrize("lr", [2.1, 3.0])
def test_gd_on_lstsq_is_reported_diverged_above_2_over_L(lstsq, lr):
    result = train(lstsq, model="linear", optimizer="gd", lr=lr, batch_size=None, steps=2000)
    assert result.status == "diverged"
    assert 1 < result.diverged_at_step < 2000
    assert result.steps == result.diverged_at_step - 1
    assert "threshold" in result.diverge_reason
    assert result.history[-1]["step"] == result.steps
    steps = [r["step"] for r in result.history]  # GD evaluates every step: the lost step adds no record
    assert steps == list(range(result.steps + 1))


def test_minibatch_and_full_batch_same_epochs_different_steps(digits):
    n = digits.n_train
    full = train(digits, optimizer="gd", lr=0.1, batch_size=None, epochs=3)
    mini = train(digits, optimizer="sgd", lr=0.1, batch_size=64, epochs=3)
    assert full.steps == 3 and mini.steps == 3 * math.ceil(n / 64)
    for result in (full, mini):
        assert result.epochs == 3.0 and result.examples == 3 * n
        assert [r["epoch"] for r in result.history] == [0.0, 1.0, 2.0, 3.0]
        assert [r["examples"] for r in result.history] == [0, n, 2 * n, 3 * n]
        assert set(result.history[0]) == set(METRIC_KEYS)
        assert result.history[0]["train_loss"] is None and result.history[1]["train_loss"] > 0
    assert [r["step"] for r in full.history] == [0, 1, 2, 3]
    assert [r["step"] for r in mini.history] == [0, 17, 34, 51]
    assert mini.val_acc > full.val_acc  # 51 small steps beat 3 big ones at the same lr


def test_eval_every_steps_and_step_budget(digits):
    result = train(digits, optimizer="sgd", lr=0.05, steps=40, eval_every=15)
    assert [r["step"] for r in result.history] == [0, 15, 30, 40]
    assert result.steps == 40 and result.examples == 2 * digits.n_train + 6 * 64  # 17 + 17 + 6 steps


def test_same_seed_is_bitwise_identical_and_the_global_rng_untouched(digits):
    torch.manual_seed(7)
    before = torch.get_rng_state()
    a = train(digits, optimizer="adam", lr=3e-3, epochs=2, seed=3, keep_model=True)
    assert torch.equal(torch.get_rng_state(), before)
    b = train(digits, optimizer="adam", lr=3e-3, epochs=2, seed=3, keep_model=True)
    c = train(digits, optimizer="adam", lr=3e-3, epochs=2, seed=4, keep_model=True)
    assert curve(a) == curve(b) and same_weights(a, b)
    assert curve(a) != curve(c) and not same_weights(a, c)


def test_nan_loss_and_nan_gradients_are_a_diverged_result_not_an_exception(lstsq, digits):
    blown = train(lstsq, optimizer="sgd", lr=1e6, batch_size=None, steps=500, divergence_factor=None)
    assert blown.status == "diverged" and "non-finite" in blown.diverge_reason
    assert blown.diverged_at_step < 500

    x = digits.x_train.clone()
    x[5, 3] = float("nan")  # every full batch sees it at step 1
    poisoned = from_tensors(x, digits.y_train, digits.x_val, digits.y_val, model=lambda: nn.Linear(64, 10))
    result = train(poisoned, optimizer="sgd", lr=0.1, batch_size=None, epochs=5)
    assert (result.status, result.diverged_at_step, result.steps) == ("diverged", 1, 0)
    assert "non-finite training loss" in result.diverge_reason


def test_torch_optimizer_class_and_factory_are_accepted(digits):
    by_class = train(digits, optimizer=torch.optim.SGD, lr=0.1, epochs=1, optimizer_options={"momentum": 0.9},
                     keep_model=True)
    by_name = train(digits, optimizer="momentum", lr=0.1, epochs=1, keep_model=True)
    assert by_class.config["optimizer"] == "torch.optim.sgd:SGD"
    assert torch.allclose(weights(by_class)[0], weights(by_name)[0], atol=1e-5)

    calls = []

    def factory(params, lr):
        calls.append(lr)
        return torch.optim.Adam(params, lr=lr)

    result = train(digits, optimizer=factory, lr=0.01, epochs=1)
    assert calls == [0.01] and result.status == "ok"


def test_custom_task_runs_through_the_same_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    task = from_tensors(x[:150], y[:150], x[150:], y[150:], x[150:], y[150:], model=lambda: nn.Linear(4, 1))
    result = train(task, optimizer="adam", lr=0.05, batch_size=32, epochs=30, evaluate_test=True)
    assert result.status == "ok" and result.val_acc is None
    assert result.val_loss < 1e-2 * result.history[0]["val_loss"]
    assert result.test_loss == pytest.approx(result.val_loss)  # test == val rows here


def test_test_split_only_when_asked(digits):
    quiet = train(digits, optimizer="sgd", lr=0.1, epochs=1)
    assert quiet.test_loss is None and quiet.test_acc is None
    asked = train(digits, optimizer="sgd", lr=0.1, epochs=1, evaluate_test=True)
    assert 0 < asked.test_acc <= 1 and asked.test_loss > 0
    assert curve(asked) == curve(quiet)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"epochs": 0}, ValueError, "epochs must be an integer >= 1 or None, got 0"),
    ({"batch_size": 0}, ValueError, "batch_size must be an integer >= 1 or None, got 0"),
    ({"lr": -1.0}, ValueError, "lr must be a finite number >= 0, got -1.0"),
    ({"lr": float("nan")}, ValueError, "lr must be"),
    ({"epochs": 2, "steps": 3}, ValueError, "epochs or steps, not both"),
    ({"optimizer": "adamm"}, ValueError, "unknown optimizer 'adamm'"),
    ({"model": "resnet"}, ValueError, "unknown model 'resnet'"),
    ({"seed": -1}, ValueError, "seed must be"),
    ({"seed": 2**64}, ValueError, r"seed must be an integer in \[0, 2\*\*64 - 1\], got 18446744073709551616"),
    ({"resume": True}, ValueError, r"resume=True \(--resume\) needs out"),
    ({"divergence_factor": 0.5}, ValueError, "divergence_factor"),
    ({"optimizer": torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)}, TypeError, "not an instance"),
    ({"optimizer_options": {"momentun": 0.9}, "optimizer": "sgd"}, TypeError, "momentun"),
])
def test_bad_arguments_are_named(digits, kwargs, error, match):
    with pytest.raises(error, match=match):
        train(digits, **kwargs)


def test_tensorboard_events_are_written(digits, tmp_path):
    import tensorboard  # noqa: F401  (a dev dependency: `make test` installs it, so this must not skip)
    train(digits, epochs=1, out=tmp_path / "run", tensorboard=True)
    events = list((tmp_path / "run" / "tensorboard").glob("events.*"))
    assert events and events[0].stat().st_size > 0


def test_tensorboard_missing_is_a_named_error(digits, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # makes `import tensorboard` fail
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ValueError, match="tensorboard"):
        train(digits, epochs=1, out=tmp_path / "run", tensorboard=True)


def test_adam_mlp_on_mnist1d_reaches_the_papers_mlp_accuracy():
    """MNIST-1D paper: an MLP gets about 0.6-0.7 test accuracy. 3000 Adam steps (60 epochs, batch 64)."""
    task = get_task("mnist1d")
    result = train(task, model="mlp", optimizer="adam", lr=3e-3, batch_size=64, epochs=60, seed=0,
                   evaluate_test=True)
    print(f"MNIST-1D MLP, Adam lr 3e-3, 3000 steps: test accuracy {result.test_acc:.4f}")
    assert result.status == "ok" and result.steps == 3000
    assert 0.57 <= result.test_acc <= 0.8, result.test_acc
    assert result.history[-1]["val_acc"] > 0.5 > result.history[0]["val_acc"]


def test_progress_bar_only_on_a_terminal_and_not_quiet(digits, capsys, monkeypatch):
    train(digits, optimizer="sgd", lr=0.1, epochs=2, quiet=False)
    assert capsys.readouterr().err == ""  # stderr is not a TTY under pytest
    monkeypatch.setattr(type(__import__("sys").stderr), "isatty", lambda self: True, raising=False)
    train(digits, optimizer="sgd", lr=0.1, epochs=2, quiet=True)
    assert capsys.readouterr().err == ""
    train(digits, optimizer="sgd", lr=0.1, epochs=2, quiet=False)
    assert "/34 [" in capsys.readouterr().err  # a tqdm bar over the 34 steps


def test_runs_in_parallel_threads_match_sequential_runs(digits):
    from concurrent.futures import ThreadPoolExecutor

    def run(seed):
        return train(digits, optimizer="adam", lr=1e-3, epochs=1, seed=seed, keep_model=True)

    sequential = [run(seed) for seed in range(4)]
    with ThreadPoolExecutor(2) as pool:
        threaded = list(pool.map(run, range(4)))
    for a, b in zip(sequential, threaded, strict=True):
        assert curve(a) == curve(b) and same_weights(a, b)


def test_training_random_numbers_are_not_the_initialisation_stream(digits):
    """A dropout-like layer must not draw the very numbers the initial weights were drawn from."""
    drawn: dict[str, torch.Tensor] = {}

    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            drawn.setdefault("init", torch.rand(8))  # the first numbers of the initialisation stream
            self.lin = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training:
                drawn.setdefault("train", torch.rand(8))
            return self.lin(x)

    task = from_tensors(digits.x_train, digits.y_train, digits.x_val, digits.y_val, model=Noisy)
    train(task, optimizer="sgd", lr=0.1, steps=2, seed=3)
    assert not torch.equal(drawn["init"], drawn["train"])
    first = drawn.pop("train")
    drawn.pop("init")
    train(task, optimizer="sgd", lr=0.1, steps=2, seed=3)
    assert torch.equal(drawn["train"], first)  # still seeded: the same draws on a rerun


def test_tensorboard_writer_is_closed_when_the_run_is_interrupted(digits, tmp_path, monkeypatch):
    from descentlab.train import loop

    class Writer:
        def __init__(self) -> None:
            self.scalars, self.closed = [], False

        def add_scalar(self, key, value, step):
            self.scalars.append((key, step))

        def close(self):
            self.closed = True

    writer = Writer()
    monkeypatch.setattr(loop, "_tensorboard_writer", lambda directory: writer)

    def stop(record):
        if record["step"] >= 17:
            raise KeyboardInterrupt  # Ctrl-C during a CLI run

    with pytest.raises(KeyboardInterrupt):
        train(digits, epochs=3, out=tmp_path / "run", tensorboard=True, callback=stop)
    assert writer.closed and ("val_loss", 17) in writer.scalars


def test_training_runs_in_train_mode_and_evaluation_in_eval_mode_without_gradients(digits):
    calls = []

    class Recorder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append((self.training, torch.is_grad_enabled(), len(x)))
            return self.lin(x)

    task = from_tensors(digits.x_train, digits.y_train, digits.x_val, digits.y_val, digits.x_test, digits.y_test,
                        model=Recorder)
    train(task, optimizer="sgd", lr=0.1, batch_size=500, epochs=2, evaluate_test=True)
    val, test = (False, False, len(digits.x_val)), (False, False, len(digits.x_test))
    epoch = [(True, True, 500), (True, True, 500), (True, True, digits.n_train - 1000), val]
    assert calls == [val, *epoch, *epoch, test]


def test_a_batch_larger_than_the_training_set_is_full_batch(lstsq):
    # sgd: gd itself refuses a minibatch size (it is the full batch by definition)
    result = train(lstsq, optimizer="sgd", lr=0.5, batch_size=10 * lstsq.n_train, epochs=3, keep_model=True)
    assert (result.steps, result.examples) == (3, 3 * lstsq.n_train)
    assert all(t.dtype == torch.float64 for t in result.state_dict().values())  # lstsq is float64 end to end
    gd = train(lstsq, optimizer="gd", lr=0.5, batch_size=None, epochs=3, keep_model=True)
    assert same_weights(result, gd)


def test_gd_trains_the_full_batch_by_default_and_refuses_a_minibatch_size(lstsq):
    """GD is g over the whole training set (the registry's ``full_batch``): ``train``'s default batch size is
    the full batch for it and 64 for SGD; a minibatch size given to GD is refused, naming both, rather than
    training minibatch SGD under GD's name."""
    gd = train(lstsq, optimizer="gd", lr=0.5, epochs=2)
    sgd = train(lstsq, optimizer="sgd", lr=0.01, epochs=1)
    assert gd.steps == 2 and sgd.steps == -(-lstsq.n_train // 64)
    with pytest.raises(ValueError, match=r"batch size 64 .*'gd' is full-batch"):
        train(lstsq, optimizer="gd", lr=0.5, batch_size=64, epochs=1)
