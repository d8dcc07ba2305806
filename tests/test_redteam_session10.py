"""Red team, session 10: ways a user rule makes the default engine ("auto") give other numbers than the
core (``set_engine(opt, "eager")``) that the two bytecode screens (``optim/_outside.py``,
``optim/_type_checks.py``) miss. Each test fails on the code it was written against (d4aa26e).

Numbers quoted are the first coordinate's total move after step 3 of :func:`_run` (the value changed from
1.0 to 10.0 before step 3): auto 0.2012 (the kernel kept 1.0), eager 0.7049.
"""

from __future__ import annotations

import builtins
import enum
import functools
import random
import sys
import types

import numpy as np
import pytest
import torch

import descentlab.optim as dl
from descentlab.optim import define_rule
from engine_pairs import step_across_beta, step_while_a_value_changes

_run, _run_beta = step_while_a_value_changes, step_across_beta

# --- 1. a global read by a string: globals()["X"], getattr(module, "X") ------------------------------

X = 1.0
CFG_MODULE = types.ModuleType("red10_cfg")
CFG_MODULE.X = 1.0


def _set_x(value: float) -> None:
    global X
    X = value


def _set_module_x(value: float) -> None:
    CFG_MODULE.X = value


@define_rule(name="Red10GlobalsSubscript", hypers={"lr": 0.1})
def _globals_subscript(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * globals()["X"]), {}


@define_rule(name="Red10GetattrString", hypers={"lr": 0.1})
def _getattr_string(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * getattr(CFG_MODULE, "X")), {}  # noqa: B009  (the point)


@pytest.mark.parametrize("how", ["globals()['X']", "getattr(module, 'X')"])
def test_a_global_read_by_its_name_as_a_string_moves_auto_as_the_core(how: str) -> None:
    """``globals()["X"]`` loads the builtin ``globals`` and a constant string; ``getattr(CFG, "X")`` loads a
    module (code, skipped) and a string: no location is recorded, the kernel keeps X = 1.0 (auto 0.2012,
    eager 0.7049 after X became 10)."""
    if how == "globals()['X']":
        _run(_globals_subscript, _set_x)
    else:
        _run(_getattr_string, _set_module_x)


# --- 2. an import inside the update ---------------------------------------------------------------------

@define_rule(name="Red10ImportInside", hypers={"lr": 0.1})
def _import_inside(param, grad, state, *, step, lr):
    import red10_cfg
    return param.add(grad, alpha=-lr * red10_cfg.X), {}


@define_rule(name="Red10FromImportInside", hypers={"lr": 0.1})
def _from_import_inside(param, grad, state, *, step, lr):
    from red10_cfg import X as scale
    return param.add(grad, alpha=-lr * scale), {}


@pytest.mark.parametrize("rule", [_import_inside, _from_import_inside], ids=["import", "from-import"])
def test_a_value_imported_inside_the_update_moves_auto_as_the_core(rule, monkeypatch) -> None:
    """``import cfg; cfg.X`` / ``from cfg import X`` in the body: IMPORT_NAME then a local (LOAD_FAST), which
    the walk never records (auto 0.2012, eager 0.7049)."""
    monkeypatch.setitem(sys.modules, "red10_cfg", CFG_MODULE)
    _run(rule, _set_module_x)


# --- 3. a helper function rebound (a notebook cell re-run, a nonlocal) -----------------------------------

def get_scale() -> float:
    return 1.0


def _rebind_global_helper(value: float) -> None:
    global get_scale
    get_scale = lambda: value  # noqa: E731  (as re-running ``def get_scale(): return 10.0`` in a notebook)


@define_rule(name="Red10GlobalHelper", hypers={"lr": 0.1})
def _global_helper(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * get_scale()), {}


def _closure_helper_rule():
    def helper() -> float:
        return 1.0

    def rebind(value: float) -> None:
        nonlocal helper
        helper = lambda: value  # noqa: E731

    @define_rule(name="Red10ClosureHelper", hypers={"lr": 0.1})
    def update(param, grad, state, *, step, lr):
        return param.add(grad, alpha=-lr * helper()), {}

    return update, rebind


@pytest.mark.parametrize("where", ["module global", "closure cell"])
def test_a_helper_function_rebound_between_steps_moves_auto_as_the_core(where: str) -> None:
    """A name holding a function is walked into, but the name's binding is not recorded (``callees(value)``
    skips it in ``outside_reads``): rebind ``get_scale`` to a function returning 10 — as re-running the
    cell that defines it in a notebook does — and the kernel keeps the old one (auto 0.2012, eager 0.7049)."""
    if where == "module global":
        _run(_global_helper, _rebind_global_helper)
    else:
        _run(*_closure_helper_rule())


# --- 4. a value read through self / cls -------------------------------------------------------------

class Settings:
    CLIP = 1.0

    @classmethod
    def clip(cls) -> float:
        return cls.CLIP


class Config:
    def __init__(self) -> None:
        self.factor = 1.0

    def update(self, param, grad, state, *, step, lr):
        return param.add(grad, alpha=-lr * self.factor), {}


@define_rule(name="Red10Classmethod", hypers={"lr": 0.1})
def _classmethod_helper(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * Settings.clip()), {}


def _set_clip(value: float) -> None:
    Settings.CLIP = value


@pytest.mark.parametrize("how", ["classmethod helper reads cls.CLIP", "bound-method update reads self.factor"])
def test_a_value_read_through_self_or_cls_moves_auto_as_the_core(how: str) -> None:
    """A classmethod's ``cls`` and a bound method's ``self`` are arguments (LOAD_FAST): ``cls.CLIP`` and
    ``self.factor`` are never seen, though ``Settings.CLIP`` or ``CONFIG.factor`` read by name are (recorded /
    refused). Auto 0.2012, eager 0.7049."""
    if how.startswith("classmethod"):
        _run(_classmethod_helper, _set_clip)
    else:
        config = Config()
        rule = define_rule(name="Red10BoundMethod", hypers={"lr": 0.1})(config.update)
        _run(rule, lambda value: setattr(config, "factor", value))


# --- 5. a callable object as the update ----------------------------------------------------------------

class ScaledUpdate:
    def __init__(self) -> None:
        self.factor = 1.0

    def __call__(self, param, grad, state, *, step, lr):
        return param.add(grad, alpha=-lr * self.factor), {}


def test_a_callable_object_as_the_update_moves_auto_as_the_core() -> None:
    """``callees()`` gives nothing for an instance with ``__call__``: its body is not read by either screen
    (no outside value, no type test), yet the trace calls it. Auto 0.2012, eager 0.7049."""
    update = ScaledUpdate()
    rule = define_rule(name="Red10CallableObject", hypers={"lr": 0.1})(update)
    _run(rule, lambda value: setattr(update, "factor", value))


# --- 6. a mutable object reached as a default argument or a partial's argument ---------------------

def _helper_with_default(cfg=[1.0]):  # noqa: B006  (the point)
    return cfg[0]


@define_rule(name="Red10HelperDefault", hypers={"lr": 0.1})
def _helper_default(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * _helper_with_default()), {}


SCALES = [1.0]


@define_rule(name="Red10UpdateDefault", hypers={"lr": 0.1})
def _update_default(param, grad, state, scales=SCALES, *, step, lr):
    return param.add(grad, alpha=-lr * scales[0]), {}


def _scaled(scales, param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * scales[0]), {}


_partial_rule = define_rule(name="Red10PartialList", hypers={"lr": 0.1})(functools.partial(_scaled, SCALES))


def _set_scales(value: float) -> None:
    SCALES[0] = value
    _helper_with_default.__defaults__[0][0] = value


@pytest.mark.parametrize("rule", [_helper_default, _update_default, _partial_rule],
                         ids=["helper's default list", "update's default list", "partial's list argument"])
def test_a_mutable_default_or_partial_argument_changed_in_place_moves_auto_as_the_core(rule) -> None:
    """Defaults and a partial's arguments are only searched for callables; a list there is read as a local
    (LOAD_FAST) and mutated in place unseen — the outside screen refuses the same list read as a global.
    Auto 0.2012, eager 0.7049."""
    _run(rule, _set_scales)


# --- 7. an attribute of an object the screen takes for code or for a frozen value ---------------------

def _holder() -> None: ...


_holder.factor = 1.0


class Mode(enum.Enum):
    FAST = 1


Mode.FAST.scale = 1.0


class Scale(float):
    pass


SCALE = Scale(1.0)
SCALE.factor = 1.0


@define_rule(name="Red10FunctionAttribute", hypers={"lr": 0.1})
def _function_attribute(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * _holder.factor), {}


@define_rule(name="Red10EnumAttribute", hypers={"lr": 0.1})
def _enum_attribute(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * Mode.FAST.scale), {}


@define_rule(name="Red10FloatSubclassAttribute", hypers={"lr": 0.1})
def _float_subclass_attribute(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * SCALE.factor), {}


ATTRIBUTE_CASES = {
    "function attribute": (_function_attribute, lambda v: setattr(_holder, "factor", v)),
    "enum member attribute": (_enum_attribute, lambda v: setattr(Mode.FAST, "scale", v)),
    "float subclass attribute": (_float_subclass_attribute, lambda v: setattr(SCALE, "factor", v)),
}


@pytest.mark.parametrize("how", list(ATTRIBUTE_CASES))
def test_an_attribute_of_a_function_enum_member_or_float_subclass_moves_auto_as_the_core(how: str) -> None:
    """The attribute chain is followed only through modules and classes; a function (``_CODE``, skipped), an
    enum member or a float subclass instance (``_frozen``, identity-checked) holding a mutable attribute is
    trusted, and ``X.attr = 10`` is unseen. Auto 0.2012, eager 0.7049."""
    _run(*ATTRIBUTE_CASES[how])


# --- 8. deeper than DEPTH -------------------------------------------------------------------------------

DEEP = 1.0


def _h4():
    return DEEP


def _h3():
    return _h4()


def _h2():
    return _h3()


def _h1():
    return _h2()


def _t4(beta):
    return isinstance(beta, float)


def _t3(beta):
    return _t4(beta)


def _t2(beta):
    return _t3(beta)


def _t1(beta):
    return _t2(beta)


@define_rule(name="Red10Deep", hypers={"lr": 0.1})
def _deep(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * _h1()), {}


@define_rule(name="Red10DeepType", hypers={"lr": 0.1, "beta": 0.4}, buffers=["avg"])
def _deep_type(param, grad, state, *, step, lr, beta):
    scale = 0.1 if _t1(beta) and beta > 0.5 else 1.0
    avg = state["avg"].mul(beta).add(grad)
    return param.add(avg, alpha=-lr * scale), {"avg": avg}


def _set_deep(value: float) -> None:
    global DEEP
    DEEP = value


@pytest.mark.parametrize("what", ["global read", "isinstance"])
def test_a_helper_four_calls_deep_is_screened_too(what: str) -> None:
    """The walk stops at DEPTH = 3: a global read or an isinstance four helper calls down is unseen (global:
    auto 0.2012, eager 0.7049; isinstance: auto 0.74, eager 0.884). Refusing what lies deeper than the walk
    (instead of trusting it) would close it."""
    if what == "global read":
        _run(_deep, _set_deep)
    else:
        _run_beta(_deep_type)


# --- 9. trusted prefixes match a module name's start, not a package ----------------------------------

MATH_SCALE = 1.0


def _from_mathutils():
    return MATH_SCALE


_from_mathutils.__module__ = "mathutils"  # as a function defined in a user's mathutils.py / torch_utils.py


@define_rule(name="Red10TrustedPrefix", hypers={"lr": 0.1})
def _trusted_prefix(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * _from_mathutils()), {}


def _set_math_scale(value: float) -> None:
    global MATH_SCALE
    MATH_SCALE = value


def test_a_helper_in_a_module_whose_name_starts_like_a_trusted_one_is_screened() -> None:
    """``TRUSTED_PREFIXES`` is matched with ``str.startswith``: "mathutils", "torch_utils", "numpyro",
    "descentlab.optim_extras" are all trusted like math/torch/numpy, and their helpers are not read.
    Auto 0.2012, eager 0.7049."""
    _run(_trusted_prefix, _set_math_scale)


# --- 10. a type look the type screen misses -----------------------------------------------------------

@define_rule(name="Red10GetattrClass", hypers={"lr": 0.1, "beta": 0.4}, buffers=["avg"])
def _getattr_class(param, grad, state, *, step, lr, beta):
    scale = 0.1 if getattr(beta, "__class__") is float and beta > 0.5 else 1.0  # noqa: B009
    avg = state["avg"].mul(beta).add(grad)
    return param.add(avg, alpha=-lr * scale), {"avg": avg}


@define_rule(name="Red10BuiltinsIsinstance", hypers={"lr": 0.1, "beta": 0.4}, buffers=["avg"])
def _builtins_isinstance(param, grad, state, *, step, lr, beta):
    scale = 0.1 if builtins.isinstance(beta, float) and beta > 0.5 else 1.0
    avg = state["avg"].mul(beta).add(grad)
    return param.add(avg, alpha=-lr * scale), {"avg": avg}


@define_rule(name="Red10NumpyIsscalar", hypers={"lr": 0.1, "beta": 0.4}, buffers=["avg"])
def _numpy_isscalar(param, grad, state, *, step, lr, beta):
    scale = 0.1 if np.isscalar(beta) and beta > 0.5 else 1.0
    avg = state["avg"].mul(beta).add(grad)
    return param.add(avg, alpha=-lr * scale), {"avg": avg}


@pytest.mark.parametrize("rule", [_getattr_class, _builtins_isinstance, _numpy_isscalar],
                         ids=["getattr(beta, '__class__')", "builtins.isinstance", "np.isscalar"])
def test_a_type_look_the_type_screen_misses_gives_the_cores_numbers(rule) -> None:
    """``getattr(beta, "__class__")`` (a string, not LOAD_ATTR); ``builtins.isinstance`` (the load's value is
    the module: ``_type_builtin_in`` checks ``load.value``, not ``resolved(load)``); ``np.isscalar`` (a trusted
    library function that tests the type inside). Kernel traced at beta 0.4 serves 0.6: auto 0.74, eager
    0.884."""
    _run_beta(rule)


# --- 11. a refusal swallowed by the rule's own try/except -------------------------------------------

@define_rule(name="Red10SwallowedRefusal", hypers={"lr": 0.1, "beta": 0.4}, buffers=["avg"])
def _swallowed(param, grad, state, *, step, lr, beta):
    try:
        scale = 0.1 if float(beta) > 0.5 else 1.0
    except Exception:  # a rule defensive about odd hyper-parameter values
        scale = 1.0
    avg = state["avg"].mul(beta).add(grad)
    return param.add(avg, alpha=-lr * scale), {"avg": avg}


def test_a_refusal_caught_by_the_rules_own_except_gives_the_cores_numbers() -> None:
    """``Unsupported`` is an ``Exception``: the stand-in's ``float(beta)`` raises it, the rule's
    ``except Exception`` takes the other branch, and the trace records a kernel with no guard (auto 0.74,
    eager 0.884 at beta 0.6). The same hides ``param.dim()``, ``beta.__hash__``... (a BaseException, or
    a flag on the program set when the stand-in refuses, would not be swallowed)."""
    _run_beta(_swallowed)


# --- 12. outside state read through a C function ----------------------------------------------------

@define_rule(name="Red10DefaultDtype", hypers={"lr": 0.1})
def _default_dtype(param, grad, state, *, step, lr):
    scale = 0.5 if torch.get_default_dtype() == torch.float64 else 1.0
    return param.add(grad, alpha=-lr * scale), {}


def test_state_read_through_a_builtin_function_moves_auto_as_the_core() -> None:
    """``torch.get_default_dtype()`` (likewise ``torch.is_grad_enabled()``, ``time.time()``): a C function,
    skipped as code, returns global state the trace bakes in. Default dtype set to float64 between steps:
    parameter auto 0.6, eager 0.7 after 4 steps of 0.1 x grad 1."""
    p, q = torch.nn.Parameter(torch.ones(8)), torch.nn.Parameter(torch.ones(8))
    ours, core = _default_dtype.optimizer([p], lr=0.1), _default_dtype.optimizer([q], lr=0.1)
    dl.set_engine(core, "eager")
    try:
        for dtype in (torch.float32, torch.float32, torch.float64, torch.float64):
            torch.set_default_dtype(dtype)
            p.grad, q.grad = torch.ones(8, dtype=torch.float32), torch.ones(8, dtype=torch.float32)
            ours.step()
            core.step()
            assert torch.equal(p, q), (dtype, p[0].item(), q[0].item(), dl.last_routes(ours)[0])
    finally:
        torch.set_default_dtype(torch.float32)


# --- 13. the update's side effects, run extra times by the probe and the trace -----------------------

@define_rule(name="Red10Random", hypers={"lr": 0.1})
def _random_jitter(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * (1.0 + random.random())), {}


def test_an_update_with_side_effects_is_called_once_a_step_as_on_the_core() -> None:
    """auto's shape probe and trace call the update on stand-ins and real slices (156 calls in 3 steps for a
    64-element tensor, eager 3): Python's ``random`` is drawn from those calls, so with the same seed before
    each step auto moves 0.1083 at step 0, eager 0.1050 (its route then says eager)."""
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(64, generator=gen)
    ours, core = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    optimizer, reference = _random_jitter.optimizer([ours], lr=0.1), _random_jitter.optimizer([core], lr=0.1)
    dl.set_engine(reference, "eager")
    state = random.getstate()
    try:
        for i in range(3):
            grad = torch.randn(64, generator=gen)
            ours.grad, core.grad = grad.clone(), grad.clone()
            random.seed(i)
            optimizer.step()
            random.seed(i)
            reference.step()
            assert torch.equal(ours, core), (i, (ours - start)[0].item(), (core - start)[0].item())
    finally:
        random.setstate(state)


# --- 14. a name that lives in builtins ------------------------------------------------------------------

def test_a_value_kept_in_builtins_moves_auto_as_the_core() -> None:
    """A load resolved to the builtins has holder None and is skipped as "a builtin": a number placed there
    (``builtins.SCALE = 1.0``, a notebook hack) is baked in. Auto 0.2012, eager 0.7049. Unlikely in user code."""
    builtins.RED10_SCALE = 1.0
    try:
        @define_rule(name="Red10Builtins", hypers={"lr": 0.1})
        def update(param, grad, state, *, step, lr):
            return param.add(grad, alpha=-lr * RED10_SCALE), {}  # noqa: F821
        _run(update, lambda value: setattr(builtins, "RED10_SCALE", value))
    finally:
        del builtins.RED10_SCALE
