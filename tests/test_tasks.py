"""Tasks: offline MNIST-1D generation and cache, digits and lstsq splits, models, custom tasks."""

from __future__ import annotations

import random
import socket

import numpy as np
import pytest
import torch
from torch import nn

from descentlab.tasks import custom_task, datasets, from_tensors, get_task, task_names


@pytest.fixture(scope="module")
def mnist1d_task():
    return get_task("mnist1d")


def _block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise OSError("network access is blocked in this test")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_mnist1d_generates_offline_caches_and_leaves_global_rngs_alone(tmp_path, monkeypatch):
    _block_network(monkeypatch)
    np.random.seed(123)
    random.seed(456)
    numpy_before = np.random.get_state()[1].copy()
    python_before = random.getstate()

    task = get_task("mnist1d", cache_dir=tmp_path)

    assert np.array_equal(np.random.get_state()[1], numpy_before)  # the package's set_seed(42) was undone
    assert random.getstate() == python_before
    assert (task.n_train, len(task.x_val), len(task.x_test)) == (3200, 800, 1000)
    assert task.x_train.shape[1:] == (40,) and task.x_train.dtype == torch.float32
    assert task.y_train.dtype == torch.int64 and set(task.y_train.unique().tolist()) == set(range(10))
    cached = list(tmp_path.glob("mnist1d-*.npz"))
    assert len(cached) == 1

    # Second build: from the cache, never from the generator, same tensors.
    monkeypatch.setattr(datasets, "generate_mnist1d", lambda *a, **k: pytest.fail("regenerated a good cache"))
    again = get_task("mnist1d", cache_dir=tmp_path)
    for split in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(task, split), getattr(again, split))


def test_mnist1d_val_split_is_carved_from_train_not_test(mnist1d_task):
    task = mnist1d_task
    train_rows = {tuple(r) for r in task.x_train.numpy().round(6).tolist()}
    val_rows = {tuple(r) for r in task.x_val.numpy().round(6).tolist()}
    test_rows = {tuple(r) for r in task.x_test.numpy().round(6).tolist()}
    assert not train_rows & val_rows
    assert not val_rows & test_rows
    other = get_task("mnist1d", split_seed=1)
    assert torch.equal(other.x_test, task.x_test)
    assert not torch.equal(other.x_val, task.x_val)


def test_corrupt_mnist1d_cache_is_regenerated(tmp_path):
    first = datasets.mnist1d_arrays(num_samples=100, cache_dir=tmp_path)
    (path,) = tmp_path.glob("mnist1d-*.npz")
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.warns(RuntimeWarning, match="corrupt"):
        second = datasets.mnist1d_arrays(num_samples=100, cache_dir=tmp_path)
    for key in datasets.MNIST1D_KEYS:
        assert np.array_equal(first[key], second[key])

    # Same size, one value changed: the checksum catches it.
    with np.load(path) as archive:
        arrays = {k: archive[k].copy() for k in archive.files}
    arrays["x"][0, 0] += 1.0
    np.savez(path, **arrays)
    with pytest.warns(RuntimeWarning, match="checksum"):
        third = datasets.mnist1d_arrays(num_samples=100, cache_dir=tmp_path)
    assert np.array_equal(third["x"], first["x"])


def test_digits_split_and_standardisation():
    task = get_task("digits")
    assert task.n_train + len(task.x_val) + len(task.x_test) == 1797
    mean = task.x_train.mean(dim=0)
    assert mean.abs().max() < 1e-5
    std = task.x_train.std(dim=0, unbiased=False)
    assert ((std - 1).abs() < 1e-4).logical_or(std < 1e-6).all()
    other = get_task("digits", split_seed=3)
    assert not torch.equal(task.y_val, other.y_val)
    with pytest.raises(ValueError, match="val_fraction"):
        get_task("digits", val_fraction=1.5)


def test_lstsq_has_the_documented_spectrum_and_solution():
    task = get_task("lstsq", condition=50.0, dim=8)
    x, y = task.x_train.double(), task.y_train.double()[:, 0]
    hessian = x.T @ x / len(x)
    eigenvalues = torch.linalg.eigvalsh(hessian).flip(0)
    assert torch.allclose(eigenvalues, torch.from_numpy(np.geomspace(1.0, 1 / 50.0, 8)), rtol=1e-10)
    solution = torch.from_numpy(task.info["solution"])
    gradient = x.T @ (x @ solution - y) / len(x)
    assert gradient.abs().max() < 1e-10
    assert task.info["gd_lr_threshold"] == pytest.approx(2.0)


@pytest.mark.parametrize(("name", "models"), [("mnist1d", ("linear", "mlp", "cnn")),
                                              ("digits", ("linear", "mlp", "cnn")), ("lstsq", ("linear", "mlp"))])
def test_every_model_maps_a_batch_to_outputs(name, models, mnist1d_task):
    task = mnist1d_task if name == "mnist1d" else get_task(name)
    assert set(task.models) == set(models)
    outputs = 10 if task.kind == "classification" else 1
    for model in models:
        net = task.make_model(model, seed=0)
        assert net(task.x_val[:5]).shape == (5, outputs)


def test_make_model_is_seeded_and_leaves_the_global_rng_alone():
    task = get_task("digits")
    torch.manual_seed(99)
    before = torch.get_rng_state()
    a = task.make_model("mlp", seed=1, hidden=(32,))
    b = task.make_model("mlp", seed=1, hidden=(32,))
    c = task.make_model("mlp", seed=2, hidden=(32,))
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(next(a.parameters()), next(c.parameters()))
    assert a[1].out_features == 32
    with pytest.raises(ValueError, match="hidden"):
        task.make_model("mlp", hidden=(0,))
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64 - 1\], got 18446744073709551616"):
        task.make_model("mlp", seed=2**64)


def test_unknown_names_and_options_are_named_in_errors():
    assert task_names() == ["mnist1d", "digits", "lstsq"]
    with pytest.raises(ValueError, match="unknown task 'imagenet'"):
        get_task("imagenet")
    with pytest.raises(TypeError, match=r"lstsq.*wrong"):
        get_task("lstsq", wrong=1)
    with pytest.raises(ValueError, match="unknown model 'cnn'"):
        get_task("lstsq").make_model("cnn")
    for condition in (0.5, float("inf"), float("nan")):
        with pytest.raises(ValueError, match=rf"condition must be a finite number >= 1, got {condition!r}"):
            get_task("lstsq", condition=condition)


def test_custom_task_from_a_dataset_pair():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 3, generator=g)
    y = (x[:, 0] > 0).long()
    train_set = torch.utils.data.TensorDataset(x[:40], y[:40])
    val_set = torch.utils.data.TensorDataset(x[40:], y[40:])
    task = custom_task(train_set, val_set, model=lambda: nn.Linear(3, 2))
    assert task.kind == "classification" and task.n_train == 40 and not task.has_test
    assert task.x_val is None and task.val_set is val_set  # kept as a Dataset, read batch by batch
    x_val, y_val = task.batch("val", torch.arange(20))
    assert torch.equal(x_val, x[40:]) and torch.equal(y_val, y[40:])
    assert task.make_model(seed=0)(x_val).shape == (20, 2)

    regression = from_tensors(x[:40], x[:40, :1], x[40:], x[40:, :1], model={"lin": lambda: nn.Linear(3, 1)})
    assert regression.kind == "regression" and regression.default_model == "lin"
    with pytest.raises(TypeError, match=r"train\[0\] must be an \(input, target\) pair"):
        custom_task([torch.zeros(3)], val_set, model=lambda: nn.Linear(3, 2))
    with pytest.raises(ValueError, match="train is empty"):
        custom_task([], val_set, model=lambda: nn.Linear(3, 2))
    with pytest.raises(ValueError, match="same non-zero length"):
        from_tensors(x, y[:5], x, y, model=lambda: nn.Linear(3, 2))
    with pytest.raises(TypeError, match=r"nn\.Module"):
        from_tensors(x, y, x, y, model=lambda: "not a module").make_model()


def test_global_rng_blocks_ending_out_of_order_leave_the_callers_state():
    """Two runs in threads: A enters, B enters, A ends, B ends. A's end must not rewind B's stream,
    and once both end the caller's state is back (not the state B found, which was A's seeded one)."""
    from descentlab.tasks.registry import global_rng

    torch.manual_seed(5)
    before = torch.get_rng_state()
    a, b = global_rng(1), global_rng(2)
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)
    assert torch.equal(torch.rand(3), torch.rand(3, generator=torch.Generator().manual_seed(2)))
    b.__exit__(None, None, None)
    assert torch.equal(torch.get_rng_state(), before)

    with global_rng(3), global_rng(4):  # nested in one thread: each end puts back what it found
        pass
    assert torch.equal(torch.get_rng_state(), before)


def test_the_task_table_describes_the_tasks_it_builds(mnist1d_task):
    """``descentlab tasks`` prints TASKS: its models, default, kind and split sizes must be what get_task builds."""
    from descentlab.tasks import TASKS

    for spec in TASKS.values():
        task = mnist1d_task if spec.name == "mnist1d" else get_task(spec.name)
        assert (tuple(task.models), task.default_model, task.kind) == (spec.models, spec.default_model, spec.kind)
        if task.has_test and task.kind == "classification":
            sizes = f"{task.n_train} train / {len(task.x_val)} val / {len(task.x_test)} test"
            assert sizes in spec.description, (spec.name, sizes)
