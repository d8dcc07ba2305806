"""The per-step caches of the engine (issue 26: the MLP step's fixed Python cost) are keyed on exact values:
a hyper-parameter changed between steps, to -0.0 from 0.0, to a tensor from a number, to 1 from True,
or mutated in place, gets the new numbers (torch.optim's, bit for bit) and the new shape probe."""

from __future__ import annotations

import math

import pytest
import torch

import descentlab.optim as dl
from descentlab.optim import engine, probe
from descentlab.optim._trace import flatten_hypers
from descentlab.optim.probe import exact_key, shape_problem


def test_exact_key_tells_apart_what_equality_does_not() -> None:
    pairs = [(0.0, -0.0), (True, 1), (1, 1.0), (False, 0), (0.5, torch.tensor(0.5)),
             ((0.9, 0.999), [0.9, 0.999]), ((0.9, 0.999), (0.9, torch.tensor(0.999))),
             (torch.tensor(0.0), torch.tensor(-0.0)), (torch.tensor(0.5), torch.tensor(0.5, dtype=torch.float64)),
             (torch.tensor(0.5), torch.tensor([0.5])), (None, 0), ("1", 1), (1e-8, 1.0000000000000002e-8)]
    for a, b in pairs:
        assert exact_key(a) is not None and exact_key(b) is not None
        assert exact_key(a) != exact_key(b), (a, b)
    for value in [0.1, -0.0, True, 3, "x", None, (0.9, [0.1, -0.0]), torch.tensor([1.0, -0.0]), float("nan")]:
        twin = value.clone() if isinstance(value, torch.Tensor) else value
        assert exact_key(value) == exact_key(twin) and hash(exact_key(value)) == hash(exact_key(twin))
    assert exact_key(float("nan")) == exact_key(-float("nan") * 0.0 + float("nan"))  # every NaN is one key
    assert exact_key(object()) is None and exact_key((0.1, object())) is None


@dl.define_rule(hypers={"lr": 0.01, "decay": 0.0})
def sign_reader(param, grad, state, *, step, lr, decay):
    """Reads the shape only for a decay of -0.0, a decay that is True (not 1), or a tensor decay."""
    odd = (isinstance(decay, torch.Tensor) or decay is True
           or (type(decay) is float and math.copysign(1.0, decay) < 0))
    return param.add(grad, alpha=-(0.1 if odd and param.dim() == 4 else 1.0) * lr), {}


def test_the_shape_probe_cache_tells_values_apart_exactly() -> None:
    problem = "gives other numbers on a tensor of shape (4, 3, 2, 2)"

    def probed(decay):
        return shape_problem(sign_reader, {"lr": 0.01, "decay": decay, "maximize": False})

    for _ in range(2):  # alternating values, each time against the last one's cached outcome
        assert probed(0.0) is None
        assert problem in probed(-0.0)
        assert probed(1) is None
        assert problem in probed(True)
        assert probed(0.0) is None
        assert problem in probed(torch.tensor(0.0))
    decay = torch.tensor(0.0)
    assert problem in probed(decay)
    decay.neg_()  # changed in place: the same object, another value (still a tensor: still a problem)
    assert problem in probed(decay)


@dl.define_rule(hypers={"lr": 0.01, "pair": (0.5, 0.5)})
def list_reader(param, grad, state, *, step, lr, pair):
    """Reads the shape only when the first of ``pair`` is negative."""
    return param.add(grad, alpha=-(0.1 if pair[0] < 0 and param.dim() == 4 else 1.0) * lr), {}


def test_a_list_changed_in_place_is_probed_again() -> None:
    pair = [0.5, 0.5]
    hypers = {"lr": 0.01, "pair": pair, "maximize": False}
    assert shape_problem(list_reader, hypers) is None
    pair[0] = -0.5
    assert shape_problem(list_reader, hypers) is not None
    pair[0] = 0.5
    assert shape_problem(list_reader, hypers) is None


def test_a_group_edit_to_minus_zero_changes_the_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule tests types (isinstance, type()): never traced, so never fused (docs/engine.md); auto then
    takes the flat path for big tensors (every tensor counts as big here), whose probe tells -0.0 from 0.0."""
    monkeypatch.setattr(engine, "FLAT_MIN_BYTES", 1)
    params = [torch.randn(4, 3, 2, 2, requires_grad=True), torch.randn(5, requires_grad=True)]
    opt = sign_reader.optimizer(params, lr=0.1)
    for p in params:
        p.grad = torch.ones_like(p)
    before = params[0].detach().clone()
    opt.step()
    type_reason = "reads a value's type"
    assert dl.last_routes(opt)[0].path == "flat" and type_reason in dl.last_routes(opt)[0].reason
    assert torch.equal(params[0], before - 0.1)
    opt.param_groups[0]["decay"] = -0.0
    before = params[0].detach().clone()
    opt.step()
    assert dl.last_routes(opt)[0].path == "eager" and "(4, 3, 2, 2)" in dl.last_routes(opt)[0].reason
    assert torch.equal(params[0], before - 0.1 * (0.1 * 1.0))
    opt.param_groups[0]["decay"] = 0.0
    opt.step()
    assert dl.last_routes(opt)[0].path == "flat" and type_reason in dl.last_routes(opt)[0].reason


def test_flatten_hypers_fast_path_is_the_general_one() -> None:
    hypers = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": -0.0, "amsgrad": False,
              "flag": None, "n": 3, "pair": [0.5, 2], "mode": "x", "t": (0.1, 1)}
    numbers, key = flatten_hypers(hypers)
    assert numbers == [1e-3, 0.9, 0.999, 1e-8, -0.0, 3.0, 0.5, 2.0, 0.1, 1.0]
    assert [math.copysign(1.0, n) for n in numbers][4] == -1.0
    assert all(type(n) is float for n in numbers)
    assert key == (("lr", "number"), ("betas", "numbers", 2), ("eps", "number"), ("weight_decay", "number"),
                   ("amsgrad", False), ("flag", None), ("n", "number"), ("pair", "numbers", 2), ("mode", "x"),
                   ("t", "numbers", 2))


def _pair(**kwargs):
    gen = torch.Generator().manual_seed(0)
    ours = [torch.randn(s, generator=gen).requires_grad_() for s in [(3, 4), (17,), (), (33, 5)]]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    return ours, theirs, dl.Adam(ours, **kwargs), torch.optim.Adam(theirs, **kwargs)


def _steps(ours, theirs, a, b, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p, q in zip(ours, theirs, strict=True):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        a.step()
        b.step()
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q)
        for name, value in b.state[q].items():
            assert torch.equal(a.state[p][name], value), name


EDITS = [
    {"weight_decay": -0.0}, {"weight_decay": 0.1}, {"weight_decay": 0.0}, {"lr": torch.tensor(1e-2)},
    {"lr": 1e-2}, {"lr": 3e-3}, {"maximize": 1}, {"maximize": True}, {"maximize": False}, {"amsgrad": 1},
    {"amsgrad": True}, {"betas": [0.5, 0.7]}, {"betas": (0.5, 0.7)}, {"betas": (0.9, torch.tensor(0.99))},
    {"betas": (0.9, 0.99)}, {"eps": 1}, {"eps": 1e-8}, {"weight_decay": 1}, {"weight_decay": 0}, {"weight_decay": -0.0},
    {"decoupled_weight_decay": 1}, {"decoupled_weight_decay": False},
]


def test_every_group_edit_between_steps_is_torchs_bits() -> None:
    ours, theirs, a, b = _pair(lr=1e-3, amsgrad=True)
    _steps(ours, theirs, a, b, 2, seed=1)
    routes = set()
    for index, edit in enumerate(EDITS):
        for opt in (a, b):
            opt.param_groups[0].update(edit)
        _steps(ours, theirs, a, b, 2, seed=10 + index)
        routes.add(dl.last_routes(a)[0].path)
    assert "fused" in routes


def test_the_grad_mode_is_the_callers_after_a_step() -> None:
    p = torch.randn(5, requires_grad=True)
    p.grad = torch.ones(5)
    opt = dl.Adam([p])
    with torch.no_grad():
        opt.step()
        assert not torch.is_grad_enabled()
    opt.step()
    assert torch.is_grad_enabled()
    assert dl.last_routes(opt)[0].path == "fused"


def test_the_probe_keys_hold_the_rule() -> None:
    """Each cache keyed by a rule's id holds the rule itself (so no other rule can take its id). At the
    default lr, so that the last outcome is kept too (one probed at a given lr is not)."""
    shape_problem(sign_reader, {"lr": 0.01, "decay": 0.0, "maximize": False}, lr_as_given=False)
    assert probe._OUTSIDE[id(sign_reader)][0] is sign_reader
    assert any(last.rule is sign_reader for last in probe._LAST.values())
    assert any(entry.rule is sign_reader for entry in probe._CLASSES.values())


@pytest.mark.parametrize("value", [0.0, -0.0, 1, True])
def test_a_fresh_process_value_equals_a_cached_one(value) -> None:
    """The outcome does not depend on what was probed before (a cache holds only exact equals)."""
    probe._LAST.clear()
    probe._PROBED.clear()
    probe._CLASSES.clear()
    fresh = shape_problem(sign_reader, {"lr": 0.01, "decay": value, "maximize": False})
    for other in [0.0, -0.0, 1, True]:
        shape_problem(sign_reader, {"lr": 0.01, "decay": other, "maximize": False})
    assert shape_problem(sign_reader, {"lr": 0.01, "decay": value, "maximize": False}) == fresh


def test_values_changed_in_place_between_steps_are_torchs_bits() -> None:
    ours, theirs, a, b = _pair(lr=1e-3)
    for opt in (a, b):
        opt.param_groups[0]["betas"] = [0.9, 0.999]
    _steps(ours, theirs, a, b, 2, seed=1)
    assert dl.last_routes(a)[0].path == "fused"
    for opt in (a, b):
        opt.param_groups[0]["betas"][0] = 0.5  # the same list object, another value
    _steps(ours, theirs, a, b, 2, seed=2)
    for opt in (a, b):
        opt.param_groups[0]["lr"] = torch.tensor(1e-2)
    _steps(ours, theirs, a, b, 1, seed=3)
    for opt in (a, b):
        opt.param_groups[0]["lr"].fill_(3e-2)  # a tensor changed in place
    _steps(ours, theirs, a, b, 2, seed=4)


def test_two_optimizers_of_one_rule_with_other_values_in_turn_are_torchs_bits() -> None:
    first, second = _pair(lr=1e-3, betas=(0.9, 0.999)), _pair(lr=1e-2, betas=(0.5, 0.6), weight_decay=-0.0)
    third = _pair(lr=1e-2, betas=(0.5, 0.6), weight_decay=0.0, maximize=True)
    for round_ in range(4):
        for index, pair in enumerate((first, second, third)):
            _steps(*pair, 1, seed=100 * round_ + index)
            assert dl.last_routes(pair[2])[0].path == "fused"


@dl.define_rule(hypers={"lr": 0.01, "beta": 0.9}, buffers=["avg"])
def untraceable(param, grad, state, *, step, lr, beta):
    """Momentum with beta read as a Python number (float()): the fused trace and the probe's classes refuse it."""
    avg = state["avg"].mul(float(beta)).add(grad)
    return param.add(avg, alpha=-lr), {"avg": avg}


def test_a_beta_schedule_keeps_the_probe_cache_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Betas new every step on a rule the trace cannot take: each is probed (exact key), the outcomes kept capped."""
    monkeypatch.setattr(probe, "PROBED_MAX", len(probe._PROBED) + 8)
    params = [torch.nn.Parameter(torch.randn(4))]
    opt = untraceable.optimizer(params, lr=1e-2)
    for t in range(probe.PROBED_MAX + 20):
        params[0].grad = torch.randn(4)
        opt.param_groups[0]["beta"] = 0.85 + t * 1e-5
        opt.step()
    assert len(probe._PROBED) <= probe.PROBED_MAX
    assert len(probe._PROBED) == probe.PROBED_MAX  # (exact keys: each value was probed)


# -- a schedule that moves betas or momentum every step probes once (issue: 38 ms a step under OneCycleLR) ----


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The shape probes run from here on, as in a fresh process (empty caches): their outcomes."""
    for cache in ("_LAST", "_PROBED", "_CLASSES"):
        monkeypatch.setattr(probe, cache, {})
    runs: list[str | None] = []
    original = probe._probe

    def counted(rule, hypers):
        runs.append(original(rule, hypers))
        return runs[-1]

    monkeypatch.setattr(probe, "_probe", counted)
    return runs


SCHEDULED = {
    "Adam": (dict(lr=1e-3), dict(weight_decay=0.1)),
    "AdamW": (dict(lr=1e-3), dict(amsgrad=True)),
    "SGD": (dict(lr=1e-2, momentum=0.9), dict(nesterov=True)),
    "RMSprop": (dict(lr=1e-2, momentum=0.5), dict(centered=True)),
}


@pytest.mark.parametrize("variant", [0, 1], ids=["plain", "variant"])
@pytest.mark.parametrize("name", sorted(SCHEDULED))
def test_one_cycle_with_cycled_momentum_probes_once_and_is_torchs_bits(name, variant, probes) -> None:
    """OneCycleLR(cycle_momentum=True) sets new betas (momentum) before every step: 50 steps probe once, not 50
    times, take the fused path, and give torch.optim's bits under that schedule."""
    hypers = {**SCHEDULED[name][0], **(SCHEDULED[name][1] if variant else {})}
    gen = torch.Generator().manual_seed(0)
    ours = [torch.randn(s, generator=gen).requires_grad_() for s in [(3, 4), (17,), (), (4, 3, 2, 2), (8,), (2, 5)]]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    a, b = getattr(dl, name)(ours, **hypers), getattr(torch.optim, name)(theirs, **hypers)
    schedules = [torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=60, cycle_momentum=True)
                 for opt in (a, b)]
    momenta = set()
    for _ in range(50):
        for p, q in zip(ours, theirs, strict=True):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        a.step()
        b.step()
        for schedule in schedules:
            schedule.step()
        momenta.add(str(a.param_groups[0].get("betas", a.param_groups[0].get("momentum"))))
        assert dl.last_routes(a)[0].path == "fused"
    assert len(momenta) == 50
    assert probes == [None]
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q)
        for key, value in b.state[q].items():
            assert torch.equal(a.state[p][key], value), key


def test_a_user_rule_under_one_cycle_probes_once_and_is_the_cores_bits(probes) -> None:
    """Lion (define_rule) under OneCycleLR with cycled betas: one probe, the fused path, the core's bits."""
    from descentlab.examples.lion import Lion

    gen = torch.Generator().manual_seed(1)
    fused = [torch.randn(s, generator=gen).requires_grad_() for s in [(3, 4), (17,), (4, 3, 2, 2)]]
    core = [p.detach().clone().requires_grad_() for p in fused]
    a, b = Lion(fused, lr=1e-3, weight_decay=0.1), Lion(core, lr=1e-3, weight_decay=0.1)
    dl.set_engine(b, "eager")
    schedules = [torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=60) for opt in (a, b)]
    for _ in range(50):
        for p, q in zip(fused, core, strict=True):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        a.step()
        b.step()
        for schedule in schedules:
            schedule.step()
        assert dl.last_routes(a)[0].path == "fused"
    assert probes == [None]
    for p, q in zip(fused, core, strict=True):
        assert torch.equal(p, q)


@dl.define_rule(hypers={"lr": 0.01, "beta": 0.5}, buffers=["avg"])
def dim_past(param, grad, state, *, step, lr, beta):
    """Momentum; above beta 0.7 (1 - beta < 0.3), 10x smaller steps on 4-D tensors: reads the shape for some
    values only."""
    avg = state["avg"].mul(beta).add(grad, alpha=1 - beta)
    scale = 0.1 if 1 - beta < 0.3 and param.dim() == 4 else 1.0
    return param.add(avg, alpha=-scale * lr), {"avg": avg}


def test_a_rule_reading_the_shape_past_a_value_is_refused_past_it(probes) -> None:
    """Values on one side of the rule's comparison share one probe; across it the probe runs and refuses."""
    problem = "gives other numbers on a tensor of shape (4, 3, 2, 2)"
    hypers = {"lr": 0.01, "maximize": False}
    for beta in (0.5, 0.55, 0.6, 0.69):
        assert shape_problem(dim_past, {**hypers, "beta": beta}) is None
    assert len(probes) == 1
    for beta in (0.71, 0.9, 0.6, 0.95, 0.5):
        found = shape_problem(dim_past, {**hypers, "beta": beta})
        assert (found is None) == (beta < 0.7), beta
        if found is not None:
            assert problem in found


def test_a_schedule_across_the_rules_comparison_takes_the_core_there(probes) -> None:
    """Stepped under a schedule crossing the value: the fused path before, the core with the probe's reason
    after, the core's bits throughout."""
    gen = torch.Generator().manual_seed(2)
    mine = [torch.randn(s, generator=gen).requires_grad_() for s in [(4, 3, 2, 2), (7,)]]
    core = [p.detach().clone().requires_grad_() for p in mine]
    a, b = dim_past.optimizer(mine, lr=0.2), dim_past.optimizer(core, lr=0.2)
    dl.set_engine(b, "eager")
    paths = []
    for t in range(30):
        for opt in (a, b):
            opt.param_groups[0]["beta"] = 0.5 + 0.4 * t / 29
        for p, q in zip(mine, core, strict=True):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        a.step()
        b.step()
        route = dl.last_routes(a)[0]
        crossed = 1 - a.param_groups[0]["beta"] < 0.3
        assert route.path == ("eager" if crossed else "fused"), (t, route)
        if crossed:
            assert "(4, 3, 2, 2)" in route.reason
        paths.append(route.path)
        for p, q in zip(mine, core, strict=True):
            assert torch.equal(p, q)
    assert "eager" in paths and "fused" in paths
    assert len(probes) == 1 + paths.count("eager")  # one for the values before, one for each value past it


def test_values_whose_arithmetic_raises_do_not_share_a_class(probes) -> None:
    """beta1 = 1 divides by 1 - beta1**t = 0: it must not share beta1 = 0.9's outcome (no guard tells them apart)."""
    rule = dl.Adam.rule
    assert shape_problem(rule, {**rule.defaults, "betas": (0.9, 0.999)}) is None
    assert "ZeroDivisionError" in shape_problem(rule, {**rule.defaults, "betas": (1.0, 0.999)})
    assert shape_problem(rule, {**rule.defaults, "betas": (0.8, 0.999)}) is None
    assert len(probes) == 2


@dl.define_rule(hypers={"lr": 0.01, "a": 0.5, "b": 2.0})
def derived_guards(param, grad, state, *, step, lr, a, b):
    """Branches on derived values (a quotient, a power): the guards' generated check against evaluate_scalars."""
    scale = 1.0
    if a / b > 0.25:
        scale = 2.0
    if (1 - a) ** 0.5 < b - 1.5:
        scale = scale * 3.0
    if -a * b <= -abs(b - a):
        scale = scale + 1.0
    return param.add(grad, alpha=-scale * lr), {}


def test_the_generated_guard_check_is_evaluate_scalars() -> None:
    """guards_hold's generated Python computes what evaluate_scalars' loop does (NaN where an op raises)."""
    import random

    from descentlab.optim._trace import COMPARISONS, evaluate_scalars, guard_nodes, guards_hold, trace

    def by_loop(program, numbers):
        values = evaluate_scalars(program, numbers, step=None, only=guard_nodes(program))
        return all(COMPARISONS[op](values[left], values[right]) == outcome
                   for left, op, right, outcome in program.guards)

    pool = [0.0, -0.0, 0.25, 0.5, 1.0, 1.5, 2.0, -1.0, 1e308, 5e-324, math.inf, -math.inf, math.nan]
    generator = random.Random(0)
    for a, b in [(0.5, 2.0), (0.9, 0.1), (1.0, 1.0), (0.0, 1.0)]:
        program = trace(derived_guards.update, {"lr": 0.01, "a": a, "b": b}, [], False, 1.0)
        assert len(program.guards) == 3
        for _ in range(400):
            numbers = [0.01, generator.choice(pool), generator.choice(pool)]
            try:
                expected = by_loop(program, numbers)
            except TypeError:  # a complex power: the loop raises, so does the generated check
                with pytest.raises(TypeError):
                    guards_hold(program, numbers)
                continue
            assert guards_hold(program, numbers) == expected, numbers
