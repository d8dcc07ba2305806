"""Red team, session 10b: ways past the screens of ``optim/_bytecode.py`` / ``_outside.py`` as fixed after
session 10 (8abe9f7): rules whose default engine ("auto", the fused kernel) gives other numbers than the
core (``set_engine(opt, "eager")``), and pure rules refused where they need not be. Each test fails on
8abe9f7.

Numbers quoted are the first coordinate's total move after step 3 of :func:`_run` (the value changed from
1.0 to 10.0 before step 3): auto 0.2012 (the kernel kept 1.0), eager 0.7049 — as in session 10.
"""

from __future__ import annotations

import collections
import enum
import types

import pytest
import torch

import descentlab.optim as dl
from descentlab.optim import define_rule
from engine_pairs import step_across_beta, step_while_a_value_changes

_run, _run_beta = step_while_a_value_changes, step_across_beta

# --- 1. a module or class that leaves the attribute chain: a local, a default, a helper's argument --------

CFG = types.ModuleType("red10b_cfg")
CFG.X = 1.0


class Settings:
    X = 1.0


def _set_cfg(value: float) -> None:
    CFG.X = value


def _set_settings(value: float) -> None:
    Settings.X = value


@define_rule(name="Red10bModuleLocal", hypers={"lr": 0.1})
def _module_local(param, grad, state, *, step, lr):
    cfg = CFG
    return param.add(grad, alpha=-lr * cfg.X), {}


@define_rule(name="Red10bModuleDefault", hypers={"lr": 0.1})
def _module_default(param, grad, state, cfg=CFG, *, step, lr):
    return param.add(grad, alpha=-lr * cfg.X), {}


def _x_of(holder):
    return holder.X


@define_rule(name="Red10bModuleArgument", hypers={"lr": 0.1})
def _module_argument(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * _x_of(CFG)), {}


@define_rule(name="Red10bClassArgument", hypers={"lr": 0.1})
def _class_argument(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * _x_of(Settings)), {}


HELD_CASES = {
    "module in a local (cfg = CFG; cfg.X)": (_module_local, _set_cfg),
    "module as a default argument (cfg=CFG)": (_module_default, _set_cfg),
    "module passed to a helper (_x_of(CFG))": (_module_argument, _set_cfg),
    "class passed to a helper (_x_of(Settings))": (_class_argument, _set_settings),
}


@pytest.mark.parametrize("how", list(HELD_CASES))
def test_a_module_or_class_held_outside_the_attribute_chain_moves_auto_as_the_core(how: str) -> None:
    """A module or class is watched by identity only where it is loaded by name, and its attributes only
    where LOAD_ATTR follows that load at once (``_bytecode._loads``). Once the module sits in a local, a
    default argument (allowed: ``_arguments_problem`` passes modules and classes) or a helper's parameter,
    ``cfg.X`` is a LOAD_FAST then LOAD_ATTR: the place ``CFG.X`` is never recorded, the module's identity
    never changes, and ``CFG.X = 10`` is unseen. Auto 0.2012, eager 0.7049 (all four). Realistic: passing
    a config module/class to a helper is ordinary code."""
    _run(*HELD_CASES[how])


# --- 2. an enum member's value is not frozen ----------------------------------------------------------

class Table(enum.Enum):
    SCALES = [1.0]  # noqa: RUF012  (the point)


class _Box:
    def __init__(self) -> None:
        self.s = 1.0


class Preset(enum.Enum):
    DEFAULT = _Box()


def _set_enum_values(value: float) -> None:
    Table.SCALES.value[0] = value
    Preset.DEFAULT.value.s = value


@define_rule(name="Red10bEnumValueList", hypers={"lr": 0.1})
def _enum_value_list(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * Table.SCALES.value[0]), {}


@define_rule(name="Red10bEnumValueObject", hypers={"lr": 0.1})
def _enum_value_object(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * Preset.DEFAULT.value.s), {}


@pytest.mark.parametrize("rule", [_enum_value_list, _enum_value_object],
                         ids=["value[0] of a list", "value.s of an object"])
def test_an_enum_members_mutable_value_moves_auto_as_the_core(rule) -> None:
    """An enum member is ``_frozen`` and ``.value`` is taken as fixed (``_attribute_fixed``), but an enum's
    value may be any object: a list (``Table.SCALES.value[0]``) or an instance (``Preset.DEFAULT.value.s``;
    only the first attribute after the member, ``value``, is checked). Mutated in place, unseen: auto
    0.2012, eager 0.7049 (both). Moderately realistic (enums of presets)."""
    _run(rule, _set_enum_values)


# --- 3. two closures of one code object ---------------------------------------------------------------

def _make_scale(s):
    def scale():
        return s

    def set_scale(value):
        nonlocal s
        s = value
    return scale, set_scale


_scale_a, _ = _make_scale(1.0)
_scale_b, _set_scale_b = _make_scale(1.0)


def _make_first(values):
    def first():
        return values[0]
    return first


FACTORS = [1.0]
_first_fixed, _first_list = _make_first((1.0,)), _make_first(FACTORS)


def _set_factors(value: float) -> None:
    FACTORS[0] = value


@define_rule(name="Red10bSharedCodeCell", hypers={"lr": 0.1})
def _shared_code_cell(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * _scale_a() * _scale_b()), {}


@define_rule(name="Red10bSharedCodeList", hypers={"lr": 0.1})
def _shared_code_list(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * _first_fixed() * _first_list()), {}


@pytest.mark.parametrize("case", ["second closure's cell reassigned", "second closure holds a list"])
def test_two_closures_of_one_code_object_are_both_screened(case: str) -> None:
    """``_bytecode.reached`` skips a function whose ``__code__`` it has seen (``seen`` holds code ids), so of
    two closures made by one factory only the first is read: the second's cells are neither watched (its
    ``s`` reassigned through ``nonlocal`` in a sibling setter) nor screened (it holds a list, which the
    screen refuses when read by name). Auto 0.2012, eager 0.7049 (both). Realistic: helper factories
    (``make_scaler(a)``, ``make_scaler(b)``) used twice in one rule."""
    if case.startswith("second closure's cell"):
        _run(_shared_code_cell, _set_scale_b)
    else:
        _run(_shared_code_list, _set_factors)


# --- 4. a builtin shadowed by a module global after the trace ------------------------------------------

@define_rule(name="Red10bShadowedBuiltin", hypers={"lr": 0.1})
def _shadowed_builtin(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * abs(-1.0)), {}


def _shadow_abs(value: float) -> None:
    if value == 1.0:
        globals().pop("abs", None)
    else:
        globals()["abs"] = lambda x: value


def test_a_builtin_shadowed_by_a_global_later_moves_auto_as_the_core() -> None:
    """A load that resolves to a builtin function records no place (``outside_reads``: "a builtin function:
    nothing to watch"), but LOAD_GLOBAL looks in the module's globals first: a later ``abs = ...`` (a
    notebook cell's ``max = 5``, ``sum = ...``) changes what the core calls, and the kernel keeps the
    builtin's answer. Auto 0.2012, eager 0.7049. Low-moderate realism (shadowing builtins in notebooks)."""
    _run(_shadowed_builtin, _shadow_abs)


# --- 5. a watched function whose defaults are replaced -------------------------------------------------

def _times(x, s=1.0):
    return x * s


@define_rule(name="Red10bReplacedDefaults", hypers={"lr": 0.1})
def _replaced_defaults(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-_times(lr)), {}


def _set_defaults(value: float) -> None:
    _times.__defaults__ = (value,)


def test_a_helpers_defaults_replaced_moves_auto_as_the_core() -> None:
    """A helper is watched by the identity of the place holding it; its ``__defaults__`` (likewise
    ``__kwdefaults__``, ``__code__``) can be replaced on the same function object, and the kernel keeps the
    old default. Auto 0.2012, eager 0.7049. Low realism."""
    _run(_replaced_defaults, _set_defaults)


# --- 6. a tuple subclass taken for a frozen value ------------------------------------------------------

LIVE = [1.0]


class _LiveTuple(tuple):
    def __getitem__(self, index):
        return LIVE[0]


_Fields = collections.namedtuple("_Fields", "scale")


class _LiveFields(_Fields):
    @property
    def scale(self):
        return LIVE[0]


LIVE_TUPLE, LIVE_FIELDS = _LiveTuple((1.0,)), _LiveFields(1.0)


def _set_live(value: float) -> None:
    LIVE[0] = value


@define_rule(name="Red10bTupleSubclassItem", hypers={"lr": 0.1})
def _tuple_subclass_item(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * LIVE_TUPLE[0]), {}


@define_rule(name="Red10bNamedtupleProperty", hypers={"lr": 0.1})
def _namedtuple_property(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * LIVE_FIELDS.scale), {}


@pytest.mark.parametrize("rule", [_tuple_subclass_item, _namedtuple_property], ids=["__getitem__", "field property"])
def test_a_tuple_subclass_that_computes_its_items_moves_auto_as_the_core(rule) -> None:
    """``_frozen`` takes any ``isinstance(value, tuple)`` whose items are frozen (a float subclass is refused
    by exact type, a tuple subclass is not); a subclass's ``__getitem__`` or a property over a named-tuple
    field reads a list. Auto 0.2012, eager 0.7049 (both). Low realism."""
    _run(rule, _set_live)


# --- 7. torch functions outside the fused op list are taken for effects --------------------------------

@define_rule(name="Red10bTorchWhere", hypers={"lr": 0.1})
def _torch_where(param, grad, state, *, step, lr):
    return param - lr * torch.where(grad > 0, grad, grad * 0.5), {}


@define_rule(name="Red10bTorchExp", hypers={"lr": 0.1})
def _torch_exp(param, grad, state, *, step, lr):
    return param.add(torch.exp(grad.neg()), alpha=-lr), {}


@pytest.mark.parametrize("rule", [_torch_where, _torch_exp], ids=["torch.where", "torch.exp"])
def test_a_pure_torch_function_is_not_an_effect(rule) -> None:
    """``_pure_c`` counts a torch C function as pure only by a name of the 22 the fused trace records
    (``TENSOR_OP_NAMES``); ``torch.where``, ``torch.exp``, ``torch.tanh``, ``torch.log``,
    ``torch.zeros_like``, ``torch.sigmoid``, ``torch.isfinite`` … are then "C functions that read or change
    state" — an *effect*, so the rule steps on the core in every mode, flat and compiled included (route
    "... calls torch.where(), which reads or changes state: an update with effects outside the rule").
    ``grad.exp()`` is taken. Numbers equal; a needless refusal of ordinary rules (realistic: high)."""
    param = torch.nn.Parameter(torch.randn(64))
    optimizer = rule.optimizer([param], lr=0.1)
    dl.set_engine(optimizer, "flat")
    param.grad = torch.randn(64)
    optimizer.step()
    assert dl.last_routes(optimizer)[0].path == "flat", dl.last_routes(optimizer)[0]


# --- 8. a tensor method called through the class --------------------------------------------------------

@define_rule(name="Red10bTensorClassMethod", hypers={"lr": 0.1})
def _tensor_class_method(param, grad, state, *, step, lr):
    return torch.Tensor.add(param, grad, alpha=-lr), {}


def test_a_tensor_method_called_through_the_class_steps_on_the_core_with_the_reason() -> None:
    """``torch.Tensor.add(param, grad, alpha=-lr)`` is ``param.add(grad, alpha=-lr)``; the screens pass it
    (``add`` is a recorded op) but the trace calls the C descriptor on a ``TensorProxy``: "tracing failed
    (TypeError: descriptor 'add' for 'torch._C.TensorBase' objects doesn't apply to a 'TensorProxy'
    object)", and auto steps on the core. A needless refusal (low-moderate realism), left as one: the
    stand-ins are not tensors. What must hold: the core's numbers, and the reason said."""
    start = torch.randn(64)
    param, core = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    make = _tensor_class_method.optimizer
    optimizer, reference = make([param], lr=0.1), make([core], lr=0.1)
    dl.set_engine(reference, "eager")
    for _ in range(2):
        param.grad, core.grad = torch.ones(64), torch.ones(64)
        optimizer.step()
        reference.step()
        assert torch.equal(param, core)
    route = dl.last_routes(optimizer)[0]
    assert route.path == "eager" and "descriptor 'add'" in route.reason, route
