"""The batched race engine: k runs trained as one stacked model give each run's own numbers.

Every configuration of a batch is compared with its per-run twin (:func:`descentlab.train.train`,
the same optimizer, lr, schedule and seed) over a table of rules × hyper-parameters × seeds,
built-in and user rules, minibatch and full batch. The 20-step table runs in float64, where the two
paths agree to ~1e-10: that is what shows they compute the same math. In float32 they agree within
rounding at the first step; later a weight 1e-8 away can flip a ReLU on one example, which Adam's
normalised step turns into an O(lr) change of that unit's row (measured in
``benchmarks/batched_race.py`` and docs/batched.md), so float32 is not compared elementwise after
many steps. A configuration that diverges is recorded at its own step and leaves the others
untouched; what cannot be stacked is found and trained one at a time with its reason.
"""

from __future__ import annotations

import dataclasses
import math
import time

import pytest
import torch
from torch import nn

from descentlab.cli import main
from descentlab.optim import SGD, Adam, Buffer, RMSprop, define_rule, register
from descentlab.optim.stacked import stacking_problem
from descentlab.racing import batching
from descentlab.racing.record import TUNE, RunSpec
from descentlab.tasks import from_tensors, get_task
from descentlab.train import train
from descentlab.train.batched import train_batched
from descentlab.train.member import Config
from descentlab.train.stacked_model import StackedModel


@define_rule(hypers={"lr": 0.01, "beta": 0.9}, buffers=["avg"])
def user_signum(param, grad, state, *, step, lr, beta):
    """A user's rule: signSGD with momentum, written with plain broadcasting arithmetic."""
    avg = state["avg"].mul(beta).add(grad, alpha=1 - beta)
    return param - lr * avg.sign(), {"avg": avg}


@define_rule(hypers={"lr": 0.01}, buffers=[])
def user_alpha_lr(param, grad, state, *, step, lr):
    """A user's rule that reads lr as one number (alpha=lr): it cannot run stacked."""
    return param.add(grad, alpha=-lr), {}


@define_rule(hypers={"lr": 0.01}, buffers=[])
def user_normalised(param, grad, state, *, step, lr):
    """Declared elementwise but divides by the whole tensor's norm: stacking would mix configurations."""
    return param - lr * grad / (grad.norm() + 1e-12), {}


@pytest.fixture(scope="module", autouse=True)
def registered():
    """The presets and user rules of this module under registry names, for this module's tests only
    (other tests, e.g. the console script's list, see the registry as shipped)."""
    from descentlab.optim import registry

    before = dict(registry._ENTRIES)
    register("rmsprop_centered_wd", RMSprop, {"centered": True, "momentum": 0.9, "weight_decay": 1e-3})
    register("adam_amsgrad_l2", Adam, {"amsgrad": True, "weight_decay": 1e-2, "betas": (0.8, 0.99)})
    register("sgd_dampened_wd", SGD, {"momentum": 0.5, "dampening": 0.3, "weight_decay": 1e-2})
    register("sgd_maximize_negated", SGD, {"momentum": 0.9, "maximize": False})
    for rule, name in ((user_signum, "user_signum"), (user_alpha_lr, "user_alpha_lr"),
                       (user_normalised, "user_normalised")):
        register(name, rule, {}, rule.doc.strip().splitlines()[0])
    yield
    registry._ENTRIES.clear()
    registry._ENTRIES.update(before)


MINIBATCH_TABLE = [
    ("sgd", "constant", (0.05, 0.2)), ("momentum", "cosine", (0.01, 0.05)), ("nesterov", "constant", (0.01,)),
    ("sgd_dampened_wd", "warmup-cosine", (0.05,)), ("adagrad", "constant", (0.01, 0.1)),
    ("rmsprop", "constant", (1e-3,)), ("rmsprop_centered_wd", "cosine", (1e-3, 3e-3)),
    ("adam", "warmup-cosine", (1e-3, 1e-2)), ("adamw", "constant", (3e-3,)), ("adam_amsgrad_l2", "constant", (1e-3,)),
    ("lion", "constant", (1e-4, 3e-4)), ("adabelief", "cosine", (1e-3,)), ("user_signum", "constant", (1e-3,)),
]
SEEDS = (0, 3)
STEPS = 20


def _configs() -> list[Config]:
    return [Config(name, schedule, lr, seed) for name, schedule, lrs in MINIBATCH_TABLE for lr in lrs
            for seed in SEEDS]


def _assert_same_weights(batched: nn.Module, alone: nn.Module, what: str, rtol: float = 1e-5,
                         atol: float = 1e-6) -> None:
    for (name, mine), theirs in zip(batched.named_parameters(), alone.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=rtol, atol=atol, msg=lambda m, name=name: f"{what}, {name}: {m}")


@pytest.fixture(scope="module")
def mnist1d():
    return get_task("mnist1d")


@pytest.fixture(scope="module")
def mnist1d_f64(mnist1d):
    """MNIST-1D in float64 (its models are built in the data's dtype)."""
    return dataclasses.replace(mnist1d, **{f"x_{s}": getattr(mnist1d, f"x_{s}").double()
                                           for s in ("train", "val", "test")})


def test_every_rule_batched_equals_its_per_run_twin(mnist1d_f64):
    """One batch holding every rule of the table (several lrs, two seeds, schedules), float64: after 20
    steps each configuration's weights equal its per-run twin's to 1e-8 elementwise, and so does every
    evaluation record."""
    configs = _configs()
    results = train_batched(mnist1d_f64, configs, steps=STEPS, keep_model=True)
    for config, result in zip(configs, results, strict=True):
        alone = train(mnist1d_f64, optimizer=config.optimizer, lr=config.lr, schedule=config.schedule,
                      seed=config.seed, steps=STEPS, keep_model=True)
        what = f"{config.optimizer} lr={config.lr} seed={config.seed} {config.schedule}"
        assert result.status == alone.status == "ok", what
        _assert_same_weights(result.model, alone.model, what, rtol=1e-8, atol=1e-12)
        assert [e["step"] for e in result.history] == [e["step"] for e in alone.history]
        for mine, theirs in zip(result.history, alone.history, strict=True):
            assert mine["lr"] == pytest.approx(theirs["lr"], rel=1e-12), what
            assert mine["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-8), what
            assert mine["examples"] == theirs["examples"]


def test_float32_first_step_agrees_within_rounding(mnist1d):
    configs = _configs()
    results = train_batched(mnist1d, configs, steps=1, keep_model=True)
    for config, result in zip(configs, results, strict=True):
        alone = train(mnist1d, optimizer=config.optimizer, lr=config.lr, schedule=config.schedule,
                      seed=config.seed, steps=1, keep_model=True)
        for mine, theirs in zip(result.model.parameters(), alone.model.parameters(), strict=True):
            assert mine.dtype == torch.float32
            assert ((mine - theirs).norm() / theirs.norm()).item() <= 1e-5, config


def test_full_batch_gd_batched_equals_per_run(mnist1d_f64):
    configs = [Config("gd", "constant", lr, seed) for lr in (0.1, 1.0) for seed in SEEDS]
    results = train_batched(mnist1d_f64, configs, batch_size=None, steps=STEPS, keep_model=True)
    for config, result in zip(configs, results, strict=True):
        alone = train(mnist1d_f64, optimizer="gd", lr=config.lr, seed=config.seed, batch_size=None, steps=STEPS,
                      keep_model=True)
        _assert_same_weights(result.model, alone.model, f"gd lr={config.lr} seed={config.seed}", rtol=1e-8,
                             atol=1e-12)


def test_a_diverging_configuration_leaves_the_others_untouched(mnist1d):
    """A momentum run at lr 1e4 blows up (loss above the threshold, then non-finite weights); it is
    recorded at the step its per-run twin records, and the other members' numbers are those of the
    same batch without it."""
    calm = [Config("adam", "constant", 1e-3, 0, True), Config("momentum", "constant", 0.05, 1, True)]
    wild = Config("momentum", "constant", 1e4, 0, True)
    started = time.perf_counter()
    with_wild = train_batched(mnist1d, [calm[0], wild, calm[1]], epochs=2, keep_model=True)
    elapsed = time.perf_counter() - started
    # each member's wall_s is its share of the batch's time: together never more than the time spent
    assert 0 < sum(r.wall_s for r in with_wild) <= elapsed
    for result in with_wild:
        times = [e["wall_s"] for e in result.history]
        assert times == sorted(times) and result.wall_s >= times[-1]
    without = train_batched(mnist1d, calm, epochs=2, keep_model=True)
    for mine, theirs in zip([with_wild[0], with_wild[2]], without, strict=True):
        assert mine.status == "ok"
        assert all(math.isfinite(p.abs().max().item()) for p in mine.model.parameters())
        _assert_same_weights(mine.model, theirs.model, "a calm member")
        assert mine.test_acc == pytest.approx(theirs.test_acc, abs=2e-3)
    lost, alone = with_wild[1], train(mnist1d, optimizer="momentum", lr=1e4, seed=0, epochs=2, evaluate_test=True)
    assert lost.status == alone.status == "diverged"
    assert lost.diverged_at_step == alone.diverged_at_step
    assert lost.diverge_reason.split()[:3] == alone.diverge_reason.split()[:3]
    assert [e["step"] for e in lost.history] == [e["step"] for e in alone.history]
    assert lost.steps == alone.steps and lost.examples == alone.examples
    assert lost.end_test_loss == pytest.approx(alone.end_test_loss, rel=1e-4)


def test_the_stacking_check_sends_what_cannot_stack_to_the_per_run_path(mnist1d):
    plan = batching.check(mnist1d, "mlp", ["adam", "user_signum", "user_alpha_lr", "user_normalised",
                                           "torch.optim:LBFGS"], jobs=2, custom_run=False)
    assert plan.stackable == {"adam", "user_signum"}
    reasons = "\n".join(plan.reasons)
    assert "'user_alpha_lr' fails on stacked tensors" in reasons and "alpha" in reasons
    assert "'user_normalised' gives other numbers on stacked tensors" in reasons
    assert "'torch.optim:LBFGS' is not a descentlab rule" in reasons
    specs = [RunSpec(TUNE, name, "constant", lr, 0, 64) for name in ("adam", "user_alpha_lr") for lr in (0.1, 0.01)]
    jobs = plan.plan(specs)
    assert sorted(len(job) for job in jobs) == [1, 1, 2]
    assert {spec.optimizer for job in jobs if len(job) == 2 for spec in job} == {"adam"}


def _task_with(model_factory) -> object:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, generator=generator), torch.randint(0, 3, (64,), generator=generator)
    return from_tensors(x, y, x[:16], y[:16], model=model_factory)


@pytest.mark.parametrize(("factory", "reason"), [
    (lambda: nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.5), nn.Linear(8, 3)), "vmap cannot batch the model"),
    (lambda: nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)), "the model has buffers"),
])
def test_a_model_vmap_refuses_trains_per_run(factory, reason):
    plan = batching.check(_task_with(factory), "custom", ["sgd"], jobs=2, custom_run=False)
    assert plan.stackable == frozenset()
    assert reason in plan.reasons[0] and "every run trains one at a time" in plan.reasons[0]


def test_batches_are_cut_for_both_workers_and_bounded():
    specs = [RunSpec(TUNE, "sgd", "constant", 10.0 ** -k, 0, 64) for k in range(46)]
    plan = batching.Batching(frozenset({"sgd"}), max_configs=64, jobs=2)
    assert [len(job) for job in plan.plan(specs)] == [23, 23]
    small = batching.Batching(frozenset({"sgd"}), max_configs=10, jobs=2)
    assert [len(job) for job in small.plan(specs)] == [10, 9, 9, 9, 9]
    assert sorted(s for job in small.plan(specs) for s in job) == sorted(specs)  # each run in one job, once


def _rows(path):
    import json

    return {(r["phase"], r["optimizer"], r["lr"], r["seed"], r["batch_size"]): r
            for r in map(json.loads, path.read_text().splitlines())}


def test_a_race_with_a_user_rule_batched_matches_the_per_run_race(tmp_path, capsys):
    """The same quick race, batched and per-run: the same runs, selected lrs and (within float32
    rounding) metrics; the user's stackable rule trains batched, the one that reads lr as a number
    trains alone with its reason printed once."""
    race = ["race", "--task", "lstsq", "--optimizers", "sgd,user_signum,user_alpha_lr", "--lrs", "0.01,0.1",
            "--seeds", "2", "--epochs", "3", "--jobs", "1", "--quiet"]
    assert main([*race, "--out", str(tmp_path / "batched")]) == 0
    err = capsys.readouterr().err
    assert err.count("'user_alpha_lr' fails on stacked tensors") == 1
    html = (tmp_path / "batched" / "report.html").read_text()
    assert "training engine" in html and ("batched | per-run" in html or "per-run | batched" in html)
    assert main([*race, "--engine", "per-run", "--out", str(tmp_path / "per-run")]) == 0
    batched, alone = _rows(tmp_path / "batched" / "results.jsonl"), _rows(tmp_path / "per-run" / "results.jsonl")
    assert batched.keys() == alone.keys()
    for key, row in batched.items():
        assert row["engine"] == ("per-run" if key[1] == "user_alpha_lr" else "batched")
        assert alone[key]["engine"] == "per-run"
        for metric in ("best_val_loss", "val_loss", "test_loss", "end_test_loss"):
            if row[metric] is None:
                assert alone[key][metric] is None
            else:
                assert row[metric] == pytest.approx(alone[key][metric], rel=1e-4), (key, metric)


def test_engine_option_errors(tmp_path, capsys):
    assert main(["race", "--task", "lstsq", "--quick", "--engine", "batched", "--backend", "ray",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "engine 'batched' runs on the local backend" in err[0]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("factory", [
    lambda: nn.Sequential(nn.Linear(5, 8, bias=False), nn.Tanh(), nn.Sequential(nn.Linear(8, 8), nn.GELU()),
                          nn.Linear(8, 3)),
    lambda: nn.Sequential(nn.Flatten(), nn.Linear(5, 3)),
    lambda: nn.Sequential(nn.Unflatten(1, (5, 1)), nn.Linear(1, 4), nn.ReLU(), nn.Flatten(), nn.Linear(20, 3)),
])
def test_both_stacked_forms_match_the_modules(factory):
    """Plain stacks of Linear/activations take the direct form (one matmul per layer), anything else
    vmap; the check compares either with the modules themselves, shared and per-copy batches alike."""
    from descentlab.train.stacked_model import StackedModel, stacking_problem

    task = _task_with(factory)
    modules = [task.make_model("custom", seed) for seed in range(3)]
    assert stacking_problem(modules, task.x_train[:8], task.y_train[:8], task.loss_fn) is None
    stacked = StackedModel(modules)
    direct = not any(isinstance(m, nn.Unflatten) for m in modules[0].modules())
    assert (stacked.layers is not None) == direct
    x = torch.randn(3, 6, 5, generator=torch.Generator().manual_seed(1))
    outputs = stacked.outputs(x, shared=False)
    for i, module in enumerate(modules):
        torch.testing.assert_close(outputs[i], module(x[i]), rtol=1e-5, atol=1e-6)


def test_the_cnn_trains_batched_through_vmap(mnist1d_f64):
    configs = [Config("adam", "constant", 1e-3, 0), Config("momentum", "constant", 0.01, 1)]
    results = train_batched(mnist1d_f64, configs, model="cnn", steps=5, keep_model=True)
    for config, result in zip(configs, results, strict=True):
        alone = train(mnist1d_f64, model="cnn", optimizer=config.optimizer, lr=config.lr, seed=config.seed, steps=5,
                      keep_model=True)
        _assert_same_weights(result.model, alone.model, f"cnn {config}", rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("loss", ["cross_entropy", "cross_entropy_probabilities", "mse_loss", "half_mse"])
def test_the_direct_losses_equal_each_copys_own(loss, shared):
    """The built-in losses computed for all copies at once equal loss_fn on each copy, ignore_index
    (-100) included."""
    import torch.nn.functional as F

    from descentlab.tasks.registry import half_mse
    from descentlab.train.stacked_model import stacked_loss

    generator = torch.Generator().manual_seed(0)
    outputs = torch.randn(3, 7, 5, generator=generator, dtype=torch.float64)
    if loss == "cross_entropy":
        fn, y = F.cross_entropy, torch.randint(0, 5, (3, 7), generator=generator)
        y[1, 2] = y[0, 4] = -100
    elif loss == "cross_entropy_probabilities":
        fn, y = F.cross_entropy, torch.softmax(torch.randn(3, 7, 5, generator=generator, dtype=torch.float64), -1)
    else:
        fn, y = {"mse_loss": F.mse_loss, "half_mse": half_mse}[loss], torch.randn(3, 7, 5, dtype=torch.float64)
    targets = y[0] if shared else y
    expected = torch.stack([fn(outputs[i], targets if shared else targets[i]) for i in range(3)])
    torch.testing.assert_close(stacked_loss(fn, outputs, targets, shared), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stacked_loss(fn, outputs, targets, shared, direct=False), expected, rtol=1e-12,
                               atol=1e-12)


def test_stacked_weights_take_their_gradients_without_a_copy(mnist1d):
    """The direct form keeps Linear weights in the layout of their batched-matmul gradient (so autograd
    hands the gradient over instead of copying it), also after a member leaves the stack."""
    from descentlab.train.stacked_model import StackedModel

    stacked = StackedModel([mnist1d.make_model("mlp", seed) for seed in range(3)])
    x, y = mnist1d.x_train[:16], mnist1d.y_train[:16]
    for keep in (None, torch.tensor([0, 2])):
        if keep is not None:
            before = [p[keep].detach().clone() for p in stacked.params]
            stacked.keep(keep)
            for param, expected in zip(stacked.params, before, strict=True):
                assert torch.equal(param.detach(), expected)
        for param in stacked.params:
            param.grad = None
        stacked.losses(x, y, mnist1d.loss_fn, shared=True).sum().backward()
        assert all(p.grad.stride() == p.stride() for p in stacked.params)
        assert any(not p.is_contiguous() for p in stacked.params)  # the weights' transposed layout


@define_rule(hypers={"lr": 0.01, "wd": 0.1}, buffers=[])
def decays_matrices_only(param, grad, state, *, step, lr, wd):
    """Elementwise, but reads the tensor's shape: stacked, a bias [k, n] would look like a matrix."""
    if param.dim() >= 2:
        param = param * (1 - lr * wd)
    return param - lr * grad, {}


@define_rule(hypers={"lr": 0.01}, buffers=[Buffer("acc", init=lambda param, hypers: torch.full_like(param,
                                                                                          hypers["lr"]))])
def starts_from_lr(param, grad, state, *, step, lr):
    """A buffer that starts from the group's lr: stacked, every configuration would start from the preset's."""
    acc = state["acc"] + grad * grad
    return param - lr * grad / acc.sqrt(), {"acc": acc}


@pytest.mark.parametrize(("rule", "why"), [(decays_matrices_only, "other numbers"),
                                           (starts_from_lr, "other numbers")])
def test_the_stacking_check_compares_with_the_unstacked_core(rule, why):
    """The probe's reference is the core on the unstacked tensors with each configuration's own lr, so
    a rule that reads a tensor's shape or starts a buffer from lr trains per-run (stacked it would
    silently compute other updates than its per-run twin)."""
    problem = stacking_problem(rule, rule.defaults)
    assert problem is not None and why in problem


def test_models_that_reuse_a_layer_are_checked_and_stacked_through_vmap():
    """A Sequential that applies one Linear twice lists its parameters once: the direct form (one
    parameter per Linear slot) does not apply, vmap does; the check never crashes on an exception
    without a message (StopIteration)."""
    def reused():
        layer = nn.Linear(5, 5)
        return nn.Sequential(layer, nn.Tanh(), layer, nn.Tanh(), nn.Linear(5, 3))

    def tied():
        model = nn.Sequential(nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 3))
        model[2].weight = model[0].weight
        return model

    for factory in (reused, tied):
        task = _task_with(factory)
        plan = batching.check(task, "custom", ["sgd"], jobs=1, custom_run=False)
        assert plan.stackable == {"sgd"} or "every run trains one at a time" in plan.reasons[0]
    task = _task_with(reused)
    assert StackedModel([task.make_model("custom", seed) for seed in (0, 1)]).layers is None
    configs = [Config("adam", "constant", 0.01, seed) for seed in (0, 1)]
    for config, result in zip(configs, train_batched(task, configs, steps=6, batch_size=16, keep_model=True),
                              strict=True):
        alone = train(task, optimizer="adam", lr=0.01, seed=config.seed, steps=6, batch_size=16, keep_model=True)
        _assert_same_weights(result.model, alone.model, str(config), rtol=1e-5, atol=1e-6)


def test_identical_configurations_are_separate_members():
    """Two members with the same config are two runs (members are compared by identity): each draws
    its own data order and gets its own result, equal to the other's."""
    task = _task_with(lambda: nn.Sequential(nn.Linear(5, 3)))
    config = Config("adam", "constant", 0.01, 3)
    first, second = train_batched(task, [config, config], epochs=2, batch_size=16)
    alone = train(task, optimizer="adam", lr=0.01, seed=3, epochs=2, batch_size=16)
    assert first.val_loss == second.val_loss == pytest.approx(alone.val_loss, rel=1e-5)


def test_race_help_prints(capsys):
    """``race --help`` (which documents --engine) prints: its text has a literal percent sign."""
    with pytest.raises(SystemExit) as exit_info:
        main(["race", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--engine" in out and "5% of the steps" in out


@pytest.mark.parametrize(("gather", "planned"), [(8, [4, 12]), (1, [4, 6, 6])])
def test_confirmation_runs_are_gathered_before_they_are_planned(gather, planned):
    """Runs added as jobs finish wait until ``gather`` of them are waiting (or nothing is left in flight),
    so that the seeds of optimizers whose tuning ended in different batches are planned together."""
    from descentlab.racing import runner
    from descentlab.racing.record import FINAL, RunRecord

    calls = []

    def plan(specs, workers):
        calls.append(len(specs))
        return [tuple(specs[i:i + 2]) for i in range(0, len(specs), 2)]

    def run_batch(job, context):
        return [(spec, RunRecord(*spec[:6], status="ok")) for spec in job]

    def more(spec, record):
        return [RunSpec(FINAL, spec.optimizer, "constant", spec.lr, seed, 64) for seed in range(3)] \
            if spec.phase == TUNE else []

    tuning = [RunSpec(TUNE, f"opt{i}", "constant", 0.1, 0, 64) for i in range(4)]
    # v3: the context is a typed RaceContext (v2: a dict)
    context = runner.RaceContext(run_fn=None, task=None, model="mlp", epochs=1, device="cpu", run_batch=run_batch)
    finished = list(runner.run_all(tuning, context, jobs=1, more=more, plan=plan, gather=gather))
    assert calls == planned
    assert sorted(spec for spec, _ in finished) == sorted(
        tuning + [RunSpec(FINAL, f"opt{i}", "constant", 0.1, seed, 64) for i in range(4) for seed in range(3)])
