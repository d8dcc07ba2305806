"""Shape independence (optim/probe.py): a rule that reads a tensor's shape gets eager's numbers in every
mode (issue 26). The flat and compiled paths hand a rule flat slices and concatenations, the batched
race stacks k runs along a new dimension 0: a user rule taking 10x smaller steps on 4-D conv kernels
trained as plain SGD in a batched race and moved a kernel 10x further compiled than eager. Each such
rule must be found by the one probe and stepped on the per-tensor core, with the reason said."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import descentlab.optim as dl
from descentlab.optim import engine, register
from descentlab.optim.probe import shape_problem
from descentlab.optim.stacked import stacking_problem
from descentlab.racing import batching, run_race
from descentlab.tasks import from_tensors


@dl.define_rule(hypers={"lr": 0.01})
def conv_scaled(param, grad, state, *, step, lr):
    """SGD with 10x smaller steps on 4-D tensors (conv kernels): elementwise, but reads param.dim()."""
    return param - (0.1 if param.dim() == 4 else 1.0) * lr * grad, {}


@dl.define_rule(hypers={"lr": 0.01, "beta": 0.9}, buffers=["avg"])
def size_scaled(param, grad, state, *, step, lr, beta):
    """Momentum scaled by 1/sqrt(numel): reads the tensor's size."""
    avg = state["avg"].mul(beta).add(grad)
    return param - lr / param.numel() ** 0.5 * avg, {"avg": avg}


@dl.define_rule(hypers={"lr": 0.01})
def rows_first(param, grad, state, *, step, lr):
    """Decays only the first row of a matrix: reads param.shape through indexing."""
    if param.dim() < 2:
        return param - lr * grad, {}
    decay = torch.ones_like(param)
    decay[0] = 0.5
    return param * decay - lr * grad, {}


SHAPE_READERS = [(conv_scaled, "(4, 3, 2, 2)"), (size_scaled, "reads .numel"), (rows_first, "shape")]
"""(A size read by name is refused from the bytecode, before a probe: `_outside.SIZE_NAMES`.)"""


@pytest.mark.parametrize(("rule", "named"), SHAPE_READERS, ids=[r.name for r, _ in SHAPE_READERS])
def test_the_probe_finds_rules_that_read_a_shape(rule, named):
    problem = shape_problem(rule, rule.defaults)
    assert problem is not None and named in problem and repr(rule.name) in problem
    assert stacking_problem(rule, rule.defaults) is not None  # the batched race asks it too


@pytest.mark.parametrize("name", dl.names())
def test_every_registered_rule_passes_the_probe(name):
    entry = dl.resolve(name)
    assert shape_problem(entry.cls.rule, entry.defaults) is None


@pytest.mark.parametrize("hypers", [{"amsgrad": True, "weight_decay": 0.1}, {"weight_decay": 0.1, "maximize": True}])
def test_presets_pass_the_probe(hypers):
    assert shape_problem(dl.Adam.rule, {**dl.Adam.rule.defaults, **hypers}) is None


def _conv_layer() -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [p.detach().clone().requires_grad_() for p in nn.Conv2d(3, 8, 3).parameters()]


def _stepped(mode: str, steps: int = 3) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    params = _conv_layer()
    opt = conv_scaled.optimizer(params, lr=0.5)
    dl.set_engine(opt, mode)
    for _ in range(steps):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
    return params, opt


@pytest.mark.parametrize("mode", ["flat", "compiled", "auto"])
def test_flat_and_compiled_modes_give_eager_numbers_for_a_rule_reading_dim(mode, monkeypatch):
    """Issue 26's case: the kernel moved 1.5 compiled where eager moved it 0.15; now every mode moves it
    eager's 0.15 (bitwise), on the core, and says why."""
    monkeypatch.setattr(engine, "FLAT_MIN_BYTES", 1)  # auto and flat take these small tensors too
    eager, _ = _stepped("eager")
    got, opt = _stepped(mode)
    kernel_moved = (eager[0] - _conv_layer()[0]).abs().max().item()
    assert kernel_moved == pytest.approx(0.15, rel=1e-5)
    for mine, reference in zip(got, eager, strict=True):
        assert torch.equal(mine, reference)
    route = dl.last_routes(opt)[0]
    assert route.path == "eager" and "(4, 3, 2, 2)" in route.reason and "per-tensor core" in route.reason


def test_an_elementwise_rule_still_takes_the_flat_path(monkeypatch):
    monkeypatch.setattr(engine, "FLAT_MIN_BYTES", 1)
    params = _conv_layer()
    opt = dl.SGD(params, lr=0.5)
    dl.set_engine(opt, "flat")
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    assert dl.last_routes(opt)[0].path == "flat"


@pytest.fixture
def registered():
    from descentlab.optim import registry

    before = dict(registry._ENTRIES)
    register("conv_scaled", conv_scaled, {}, "SGD, 10x smaller steps on 4-D tensors")
    yield
    registry._ENTRIES.clear()
    registry._ENTRIES.update(before)


def _image_task():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 6, 6, generator=generator)
    y = (x[:, 0, :3].sum(dim=(1, 2)) > 0).long() + (x[:, 0, 3:].sum(dim=(1, 2)) > 0).long()

    def model() -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))

    return from_tensors(x[:64], y[:64], x[64:80], y[64:80], x[80:], y[80:], model=model, name="images")


def test_a_batched_race_on_a_cnn_trains_a_shape_reading_rule_per_run(registered, tmp_path, capsys):
    """The batched race on a CNN gives the per-run race's numbers for a rule reading param.dim() (it trains
    alone, the reason printed once), while plain SGD still trains batched."""
    task = _image_task()
    plan = batching.check(task, "custom", ["sgd", "conv_scaled"], jobs=1, custom_run=False)
    assert plan.stackable == {"sgd"}
    race = {"optimizers": ["sgd", "conv_scaled"], "lrs": [0.1, 0.3], "seeds": 2, "epochs": 2, "jobs": 1,
            "batch_size": 16, "progress": False}
    batched = run_race(task, out=tmp_path / "batched", **race)
    err = capsys.readouterr().err
    assert err.count("'conv_scaled' gives other numbers") == 1 and "(4, 3, 2, 2)" in err
    alone = run_race(task, out=tmp_path / "per-run", engine="per-run", **race)
    key = lambda r: (r.phase, r.optimizer, r.lr, r.seed)  # noqa: E731
    theirs = {key(r): r for r in alone.records}
    assert {key(r) for r in batched.records} == theirs.keys()
    assert any(r.engine == "batched" for r in batched.records if r.optimizer == "sgd")
    for record in batched.records:
        if record.optimizer == "conv_scaled":
            assert record.engine == "per-run"
        for metric in ("best_val_loss", "val_loss", "test_loss", "end_test_loss"):
            mine, reference = getattr(record, metric), getattr(theirs[key(record)], metric)
            assert (mine is None) == (reference is None), (key(record), metric)
            if mine is not None:
                assert mine == pytest.approx(reference, rel=1e-4), (key(record), metric)
    assert any(r.test_loss is not None and r.optimizer == "conv_scaled" for r in batched.records)
