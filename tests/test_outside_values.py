"""A rule that reads a value from outside itself (a module global, a closure variable, a module's
attribute, an object's attribute): the fused kernel is a trace, and must not keep a value the core would
read afresh (``optim/_outside.py``). Every engine gives the core's numbers at every step, the value
changed between steps."""

from __future__ import annotations

import types

import pytest
import torch

import descentlab.optim as dl
from descentlab.optim import define_rule, registry
from descentlab.optim._outside import outside_reads
from descentlab.optim._trace import trace_problem
from descentlab.optim.ops import add_scaled
from descentlab.optim.probe import shape_problem
from descentlab.optim.stacked import StackedRule
from engine_pairs import step_across

SCALE = 1.0
SETTINGS = types.ModuleType("settings")
SETTINGS.CLIP = 1.0


class Config:
    def __init__(self) -> None:
        self.factor = 1.0


CONFIG = Config()


@define_rule(name="ScaledByGlobal", hypers={"lr": 0.1}, buffers=["exp_avg"])
def scaled_by_global(param, grad, state, *, step, lr):
    momentum = state["exp_avg"].mul(0.5).add(grad)
    return add_scaled(param, momentum, -lr * SCALE), {"exp_avg": momentum}


@define_rule(name="ScaledByModuleAttribute", hypers={"lr": 0.1}, buffers=[])
def scaled_by_module_attribute(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * SETTINGS.CLIP), {}


@define_rule(name="ScaledByObject", hypers={"lr": 0.1}, buffers=[])
def scaled_by_object(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * CONFIG.factor), {}


def _closure_rule():
    factor = 1.0

    def set_factor(value: float) -> None:
        nonlocal factor
        factor = value

    @define_rule(name="ScaledByClosure", hypers={"lr": 0.1}, buffers=[])
    def scaled_by_closure(param, grad, state, *, step, lr):
        return param.add(grad, alpha=-lr * factor), {}

    return scaled_by_closure, set_factor


def _set_global(value: float) -> None:
    global SCALE
    SCALE = value


def _set_object(value: float) -> None:
    CONFIG.factor = value


def _set_module_attribute(value: float) -> None:
    SETTINGS.CLIP = value


CASES = {
    "module global": (scaled_by_global, _set_global),
    "module attribute": (scaled_by_module_attribute, _set_module_attribute),
    "object attribute": (scaled_by_object, _set_object),
}


@pytest.mark.parametrize("case", [*CASES, "closure variable"])
@pytest.mark.parametrize("engine", ["auto", "fused", "flat"])
def test_a_value_read_from_outside_the_rule_and_changed_between_steps_moves_every_engine_as_the_core(
        case: str, engine: str) -> None:
    """The fused step used to keep the value its trace saw (-0.2 where the core gives -1.1)."""
    rule, set_value = _closure_rule() if case == "closure variable" else CASES[case]
    try:
        set_value(1.0)
        gen = torch.Generator().manual_seed(0)
        start = torch.randn(4000, generator=gen)
        ours, core = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
        optimizer, reference = rule.optimizer([ours], lr=0.1), rule.optimizer([core], lr=0.1)
        dl.set_engine(optimizer, engine)
        dl.set_engine(reference, "eager")
        for step, value in enumerate([1.0, 1.0, 10.0, 10.0, 0.5]):
            set_value(value)
            grad = torch.randn(4000, generator=gen)
            ours.grad, core.grad = grad.clone(), grad.clone()
            optimizer.step()
            reference.step()
            assert torch.equal(ours, core), (case, engine, step)
    finally:
        set_value(1.0)
    route = dl.last_routes(optimizer)[0]
    if engine != "flat":  # (flat calls the update itself, on slices: it reads the object afresh)
        assert route.path == "eager", route
        assert NAMES[case] in route.reason, route


NAMES = {"module global": "SCALE", "module attribute": "CLIP", "object attribute": "CONFIG.factor",
         "closure variable": "factor"}


def test_a_changed_global_is_named_and_an_unchanged_one_keeps_the_fused_path() -> None:
    param = torch.nn.Parameter(torch.zeros(100))
    optimizer = scaled_by_global.optimizer([param], lr=0.1)
    for _ in range(3):
        param.grad = torch.ones(100)
        optimizer.step()
        assert dl.last_routes(optimizer)[0].path == "fused"
    try:
        _set_global(2.0)
        param.grad = torch.ones(100)
        optimizer.step()
    finally:
        _set_global(1.0)
    route = dl.last_routes(optimizer)[0]
    assert route.path == "eager" and "SCALE" in route.reason, route


def test_an_object_read_from_outside_is_never_traced_and_the_reason_names_it() -> None:
    problem = outside_reads(scaled_by_object.update).problem
    assert problem is not None and "CONFIG" in problem and "Config" in problem
    param = torch.nn.Parameter(torch.zeros(100))
    param.grad = torch.ones(100)
    optimizer = scaled_by_object.optimizer([param], lr=0.1)
    optimizer.step()
    route = dl.last_routes(optimizer)[0]
    assert route.path == "eager" and "CONFIG" in route.reason, route


def test_every_shipped_rule_passes_the_screens_and_stays_fused() -> None:
    """What the built-in rules and the shipped examples read from outside (their helpers: ops.add_ratio,
    torch.maximum) is watched, never refused."""
    for name in registry.names():
        rule = registry.rule_of(name)
        assert rule is not None, name
        assert trace_problem(rule.update) is None, name
        param = torch.nn.Parameter(torch.ones(10))
        param.grad = torch.ones(10)
        optimizer = registry.create(name, [param], lr=0.01)
        optimizer.step()
        optimizer.step()
        assert dl.last_routes(optimizer)[0].path == "fused", (name, dl.last_routes(optimizer))


def test_the_stacked_step_gives_each_configurations_core_numbers_after_a_global_changed() -> None:
    """The batched race's stacked step keeps its plan between steps (StepCache): a changed global must
    leave it for the rule's own update, which reads the new value."""
    rule = scaled_by_global
    lrs = [0.1, 0.03]
    gen = torch.Generator().manual_seed(2)
    stacked = [torch.randn(len(lrs), 64, 3, generator=gen)]
    alone = [[s[i].clone() for s in stacked] for i in range(len(lrs))]
    hypers = {"lr": 0.1, "maximize": False}
    together = StackedRule(rule, hypers, stacked)
    single = [StackedRule(rule, {**hypers, "lr": lr}, alone[i], fused=False) for i, lr in enumerate(lrs)]
    try:
        for value in (1.0, 1.0, 3.0, 3.0):
            _set_global(value)
            grads = [torch.randn(s.shape, generator=gen) for s in stacked]
            together.step(stacked, grads, torch.tensor(lrs, dtype=torch.float64))
            for i, lr in enumerate(lrs):
                single[i].step(alone[i], [g[i] for g in grads], lr)
            for i in range(len(lrs)):
                assert torch.allclose(stacked[0][i], alone[i][0], rtol=0, atol=1e-6), value
    finally:
        _set_global(1.0)


SHAPED = False


@define_rule(name="ShapedByGlobal", hypers={"lr": 0.1}, buffers=[])
def shaped_by_global(param, grad, state, *, step, lr):
    scale = 0.1 if SHAPED and param.dim() == 2 else 1.0
    return param.add(grad, alpha=-lr * scale), {}


def test_the_shape_probe_looks_again_when_a_global_the_rule_reads_changed() -> None:
    """The probe keeps its outcome per rule and class of values; a rule that reads a shape only when a
    global flag is set must be found out once the flag is set (else the flat path moves it 10x)."""
    global SHAPED
    hypers = {"lr": 0.1, "maximize": False}
    assert shape_problem(shaped_by_global, hypers) is None
    try:
        SHAPED = True
        assert "shape" in (shape_problem(shaped_by_global, hypers) or "")
    finally:
        SHAPED = False
    assert shape_problem(shaped_by_global, hypers) is None


FACTOR = 1.0
HELPERS = types.ModuleType("helpers")


def _factor() -> float:
    return FACTOR


def _looks_like_a_float(value) -> bool:
    return isinstance(value, float)


HELPERS.factor = _factor
HELPERS.looks_like_a_float = _looks_like_a_float


@define_rule(name="ScaledByHelper", hypers={"lr": 0.1}, buffers=[])
def scaled_by_helper(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * HELPERS.factor()), {}


@define_rule(name="TypeTestInHelper", hypers={"lr": 0.1}, buffers=[])
def type_test_in_helper(param, grad, state, *, step, lr):
    scale = 0.1 if HELPERS.looks_like_a_float(lr) and lr > 0.5 else 1.0
    return param.add(grad, alpha=-lr * scale), {}


def test_a_helper_reached_through_a_module_attribute_is_read_too() -> None:
    """``helpers.factor()`` reads a global of its own module; ``helpers.looks_like_a_float(lr)`` tests a
    type: both are in functions the update reaches through a module's attribute."""
    global FACTOR
    param, core = torch.nn.Parameter(torch.zeros(100)), torch.nn.Parameter(torch.zeros(100))
    optimizer, reference = scaled_by_helper.optimizer([param], lr=0.1), scaled_by_helper.optimizer([core], lr=0.1)
    dl.set_engine(reference, "eager")
    try:
        for value in (1.0, 10.0):
            FACTOR = value
            param.grad, core.grad = torch.ones(100), torch.ones(100)
            optimizer.step()
            reference.step()
            assert torch.equal(param, core), value
    finally:
        FACTOR = 1.0
    assert "FACTOR" in dl.last_routes(optimizer)[0].reason
    optimizer = step_across(type_test_in_helper, "lr", (0.4, 0.6), size=100, lr=0.4)
    assert "isinstance" in dl.last_routes(optimizer)[0].reason


CALLS = 0


@define_rule(name="CountsItsCalls", hypers={"lr": 0.1}, buffers=[])
def counts_its_calls(param, grad, state, *, step, lr):
    global CALLS
    CALLS += 1
    return param.add(grad, alpha=-lr), {}


@pytest.mark.parametrize("engine", ["auto", "fused", "flat"])
def test_an_update_that_assigns_a_global_is_called_as_the_core_calls_it_in_every_mode(engine: str) -> None:
    """A probe, a trace or slices would call it more often than once a tensor a step (the core's count)."""
    global CALLS
    params = [torch.nn.Parameter(torch.zeros(n)) for n in (10, 20)]
    optimizer = counts_its_calls.optimizer(params, lr=0.1)
    dl.set_engine(optimizer, engine)
    CALLS = 0
    for _ in range(3):
        for p in params:
            p.grad = torch.ones_like(p)
        optimizer.step()
    assert CALLS == 6
    route = dl.last_routes(optimizer)[0]
    assert route.path == "eager" and "assigns the global CALLS" in route.reason, route


def test_the_screens_list_of_recorded_ops_is_the_traces() -> None:
    """``_op_names`` repeats the trace's op names for the outside screen (which the trace imports)."""
    from descentlab.optim import _op_names, _trace

    assert set(_trace.TENSOR_OPS) == _op_names.TENSOR_OP_NAMES
    assert _trace.ALIASES is _op_names.ALIASES


class StackingSwitch:
    def __init__(self) -> None:
        self.as_number = False


SWITCH = StackingSwitch()


@define_rule(name="LrAsNumberBySwitch", hypers={"lr": 0.1}, buffers=[])
def lr_as_number_by_switch(param, grad, state, *, step, lr):
    rate = float(lr) if SWITCH.as_number else lr
    return param - rate * grad, {}


def test_the_stacking_check_looks_again_for_a_rule_that_reads_an_object_changed_in_place() -> None:
    """The race asks once per plan whether a rule can be stacked, and the check keeps its answer while
    the places the rule reads hold the same objects. An object changed in place (``SWITCH.as_number``)
    is not such a place: its answer must not be kept, or the batched race trains with a stale yes."""
    from descentlab.optim.stacked import stacking_problem

    hypers = {"lr": 0.1}
    assert stacking_problem(lr_as_number_by_switch, hypers) is None
    try:
        SWITCH.as_number = True
        assert "stacked" in (stacking_problem(lr_as_number_by_switch, hypers) or "")
    finally:
        SWITCH.as_number = False
    assert stacking_problem(lr_as_number_by_switch, hypers) is None
