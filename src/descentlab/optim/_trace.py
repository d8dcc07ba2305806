"""A rule's ``update`` recorded once as a program: per-step scalar math, then per-element tensor math.

The fused path (:mod:`._fused`) runs a rule's one declaration as one compiled loop. To get there, the
rule's own ``update`` is called once on stand-ins (:class:`TensorProxy` for ``param``, ``grad`` and the
buffers, :class:`ScalarProxy` for the step count and every numeric hyper-parameter) that record what is
done to them instead of doing it:

* arithmetic on scalars (``1 - beta1``, ``beta1 ** step``, ``lr / bias_correction1``) becomes a scalar
  program, evaluated in double precision once per step (per configuration in a batched race), in the
  same order of operations as Python evaluates it, so it yields the same doubles;
* torch operations on tensors (``lerp``, ``addcmul``, ``addcdiv``, ``sqrt``, ``sign``, ``maximum``, ...)
  become an element program, each op recorded with the scalars it was given.

Hyper-parameters and the step count are inputs of the program, never constants in it: a second process
with other betas gets its own numbers from the same compiled code. What the trace does depend on is
recorded as its *key* (flags such as ``amsgrad``, ``maximize``, which buffers exist) and its *guards*:
each comparison of a scalar (``weight_decay != 0``, ``momentum > 0``) is evaluated on the values of the
trace and remembered with its outcome; a later step whose values change an outcome is traced anew.
A comparison involving the step count is refused (the program must be the same at every step).

Anything else — an op this module does not know, reading a tensor's shape, a tensor hyper-parameter,
a conversion to ``float`` — raises :class:`Unsupported` with the reason, and the group runs on the core.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ._op_names import ALIASES
from ._outside import Screen, outside_reads, snapshot


class Unsupported(Exception):
    """The rule does something the fused path cannot record; the message says what. Raised while an update
    runs on the stand-ins, it is also noted (:data:`_REFUSED`): an update whose own ``except`` swallows it
    (``try: float(beta) except Exception: ...``) took a branch the real values would not, and its trace is
    refused all the same."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        noted = getattr(_REFUSED, "messages", None)
        if noted is not None:
            noted.append(str(self))


_REFUSED = threading.local()
"""Per thread, while :func:`trace` runs an update: the refusals raised so far."""


@dataclass
class Program:
    """A traced rule: scalar nodes, element nodes, outputs, guards."""

    scalar_ops: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    """Scalar node ``i``: ``("hyper", (k,))`` (k-th flattened hyper-parameter), ``("step", ())``,
    ``("const", (value,))`` or an arithmetic op over earlier scalar nodes."""
    scalar_values: list[float] = field(default_factory=list)
    scalar_steps: list[bool] = field(default_factory=list)
    """Whether scalar node ``i`` depends on the step count."""
    element_ops: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    """Element node ``j``: ``("input", (slot,))`` (0 param, 1 grad, 2+ buffers in order) or an op whose
    arguments are ``("e", j)`` element nodes and ``("s", i)`` scalar nodes."""
    outputs: dict[int, int] = field(default_factory=dict)
    """Input slot -> element node written back into it (only slots that change)."""
    guards: list[tuple[int, str, int, bool]] = field(default_factory=list)
    """``(scalar node, comparison, scalar node, outcome)``."""
    outside: tuple[tuple[Any, Any], ...] = ()
    """The values from outside the rule the trace read, with where they live (:mod:`._outside`): the
    program holds while each place holds the same object."""

    def scalar(self, op: str, args: tuple[Any, ...], value: float, steps: bool) -> ScalarProxy:
        self.scalar_ops.append((op, args))
        self.scalar_values.append(value)
        self.scalar_steps.append(steps)
        return ScalarProxy(self, len(self.scalar_ops) - 1)

    def element(self, op: str, args: tuple[Any, ...]) -> int:
        self.element_ops.append((op, args))
        return len(self.element_ops) - 1


SCALAR_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv, "pow": operator.pow,
}
COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge, "eq": operator.eq, "ne": operator.ne,
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class ScalarProxy:
    """A number the program takes as an input, or computes from its inputs (see the module docstring)."""

    __slots__ = ("index", "program")

    def __init__(self, program: Program, index: int) -> None:
        self.program, self.index = program, index

    @property
    def value(self) -> float:
        return self.program.scalar_values[self.index]

    def _node(self, other: Any) -> ScalarProxy:
        if isinstance(other, ScalarProxy):
            return other
        if _is_number(other):
            return self.program.scalar("const", (float(other),), float(other), False)
        raise Unsupported(f"arithmetic between a hyper-parameter and a {type(other).__name__}")

    def _binary(self, op: str, left: ScalarProxy, right: ScalarProxy) -> ScalarProxy:
        value = SCALAR_BINARY[op](left.value, right.value)
        steps = self.program.scalar_steps[left.index] or self.program.scalar_steps[right.index]
        return self.program.scalar(op, (left.index, right.index), float(value), steps)

    def _compare(self, op: str, other: Any) -> bool:
        right = self._node(other)
        outcome = COMPARISONS[op](self.value, right.value)
        if self.program.scalar_steps[self.index] or self.program.scalar_steps[right.index]:
            raise Unsupported("the rule branches on the step count")
        self.program.guards.append((self.index, op, right.index, outcome))
        return outcome

    def __add__(self, other: Any) -> ScalarProxy:
        return self._binary("add", self, self._node(other))

    def __radd__(self, other: Any) -> ScalarProxy:
        return self._binary("add", self._node(other), self)

    def __sub__(self, other: Any) -> ScalarProxy:
        return self._binary("sub", self, self._node(other))

    def __rsub__(self, other: Any) -> ScalarProxy:
        return self._binary("sub", self._node(other), self)

    def __mul__(self, other: Any) -> ScalarProxy:
        return self._binary("mul", self, self._node(other))

    def __rmul__(self, other: Any) -> ScalarProxy:
        return self._binary("mul", self._node(other), self)

    def __truediv__(self, other: Any) -> ScalarProxy:
        return self._binary("div", self, self._node(other))

    def __rtruediv__(self, other: Any) -> ScalarProxy:
        return self._binary("div", self._node(other), self)

    def __pow__(self, other: Any) -> ScalarProxy:
        return self._binary("pow", self, self._node(other))

    def __rpow__(self, other: Any) -> ScalarProxy:
        return self._binary("pow", self._node(other), self)

    def __neg__(self) -> ScalarProxy:
        return self.program.scalar("neg", (self.index,), -self.value, self.program.scalar_steps[self.index])

    def __pos__(self) -> ScalarProxy:
        return self

    def __abs__(self) -> ScalarProxy:
        return self.program.scalar("abs", (self.index,), abs(self.value), self.program.scalar_steps[self.index])

    def __lt__(self, other: Any) -> bool:
        return self._compare("lt", other)

    def __le__(self, other: Any) -> bool:
        return self._compare("le", other)

    def __gt__(self, other: Any) -> bool:
        return self._compare("gt", other)

    def __ge__(self, other: Any) -> bool:
        return self._compare("ge", other)

    def __eq__(self, other: Any) -> bool:  # type: ignore[override]
        return self._compare("eq", other)

    def __ne__(self, other: Any) -> bool:  # type: ignore[override]
        return self._compare("ne", other)

    def __bool__(self) -> bool:
        return self._compare("ne", 0)

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Sequence[Any] = (),
                           kwargs: Mapping[str, Any] | None = None) -> Any:
        """A torch function given a traced scalar (``torch.addcdiv(x, u, v, value=-step_size)``)."""
        return TensorProxy.__torch_function__(func, types, args, kwargs)

    def __float__(self) -> float:
        raise Unsupported("the rule converts a hyper-parameter to a Python number (float/int/item)")

    __int__ = __index__ = __float__

    def __getattr__(self, name: str) -> Any:  # (not AttributeError: ``hasattr`` must not answer False)
        raise Unsupported(f"the rule reads .{name} of a hyper-parameter")

    def __format__(self, spec: str) -> str:
        raise Unsupported("the rule turns a hyper-parameter into text")

    def __repr__(self) -> str:
        raise Unsupported("the rule turns a hyper-parameter into text")

    __str__ = __repr__

    def __dir__(self) -> list[str]:
        raise Unsupported("the rule lists a hyper-parameter's attributes")


class TensorProxy:
    """A tensor of the element program: every torch op on it is recorded (see :data:`TENSOR_OPS`)."""

    __slots__ = ("node", "program")

    def __init__(self, program: Program, node: int) -> None:
        self.program, self.node = program, node

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Sequence[Any] = (),
                           kwargs: Mapping[str, Any] | None = None) -> Any:
        name = getattr(func, "__name__", str(func))
        return _record(name, list(args), dict(kwargs or {}))

    def __getattr__(self, name: str) -> Any:
        base = name[:-1] if name.endswith("_") and not name.startswith("_") else name
        if ALIASES.get(base, base) in TENSOR_OPS:
            return lambda *args, **kwargs: _record(name, [self, *args], kwargs)
        raise Unsupported(f"tensor.{name} is not known to the fused code generator")

    def __add__(self, other: Any) -> Any:
        return _record("add", [self, other], {})

    def __radd__(self, other: Any) -> Any:
        return _record("add", [self, other], {})

    def __sub__(self, other: Any) -> Any:
        return _record("sub", [self, other], {})

    def __rsub__(self, other: Any) -> Any:
        return _record("rsub", [self, other], {})

    def __mul__(self, other: Any) -> Any:
        return _record("mul", [self, other], {})

    def __rmul__(self, other: Any) -> Any:
        return _record("mul", [self, other], {})

    def __truediv__(self, other: Any) -> Any:
        return _record("div", [self, other], {})

    def __rtruediv__(self, other: Any) -> Any:
        return _record("rdiv", [self, other], {})

    def __pow__(self, other: Any) -> Any:
        return _record("pow", [self, other], {})

    def __neg__(self) -> Any:
        return _record("neg", [self], {})

    def __abs__(self) -> Any:
        return _record("abs", [self], {})

    def __bool__(self) -> bool:
        raise Unsupported("the rule branches on a tensor's values")

    def __len__(self) -> int:
        raise Unsupported("the rule reads a tensor's length")


def _operand(program: Program, value: Any) -> tuple[str, int]:
    """An op argument as ``("e", node)`` or ``("s", scalar node)``."""
    if isinstance(value, TensorProxy):
        return ("e", value.node)
    if isinstance(value, ScalarProxy):
        return ("s", value.index)
    if _is_number(value):
        return ("s", program.scalar("const", (float(value),), float(value), False).index)
    raise Unsupported(f"an operand of type {type(value).__name__}")


def _program_of(values: Sequence[Any]) -> Program:
    for value in values:
        if isinstance(value, TensorProxy | ScalarProxy):
            return value.program
    raise Unsupported("an op without a traced tensor")


def _scalar_only(program: Program, value: Any, what: str) -> tuple[str, int]:
    operand = _operand(program, value)
    if operand[0] != "s":
        raise Unsupported(f"{what} as a tensor")
    return operand


def _new(program: Program, op: str, *args: tuple[str, int]) -> TensorProxy:
    return TensorProxy(program, program.element(op, args))


def _record(name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Record torch op ``name`` (a method, a ``torch.*`` function or an operator) and return its proxy."""
    inplace = name.endswith("_") and not name.startswith("_")
    base = name[:-1] if inplace else name
    base = ALIASES.get(base, base)
    if base not in TENSOR_OPS:
        raise Unsupported(f"torch op {name!r} is not known to the fused code generator")
    program = _program_of([*args, *kwargs.values()])
    result = TENSOR_OPS[base](program, args, kwargs)
    if inplace:
        target = args[0]
        if not isinstance(target, TensorProxy):
            raise Unsupported(f"in-place {name} on a non-tensor")
        target.node = result.node
        return target
    return result


def _alpha(program: Program, kwargs: dict[str, Any], args: list[Any], index: int, key: str) -> tuple[str, int]:
    value = kwargs.pop(key, args[index] if len(args) > index else 1)
    return _scalar_only(program, value, key)


def _op_add(program: Program, args: list[Any], kwargs: dict[str, Any], sign: float = 1.0) -> TensorProxy:
    alpha = kwargs.get("alpha", 1)
    if sign < 0:
        alpha = -alpha
    first, second = _operand(program, args[0]), _operand(program, args[1])
    if first[0] == "s":  # number + tensor (never from a method; from __radd__ the tensor comes first)
        first, second = second, first
    return _new(program, "add", first, second, _scalar_only(program, alpha, "alpha"))


def _op_rsub(program: Program, args: list[Any], kwargs: dict[str, Any]) -> TensorProxy:
    """``number - tensor`` (torch: other - alpha·self)."""
    alpha = kwargs.get("alpha", 1)
    return _new(program, "add", _operand(program, args[1]), _operand(program, args[0]),
                _scalar_only(program, -alpha if _is_number(alpha) else alpha.__neg__(), "alpha"))


def _binary(op: str) -> Callable[[Program, list[Any], dict[str, Any]], TensorProxy]:
    def record(program: Program, args: list[Any], kwargs: dict[str, Any]) -> TensorProxy:
        other = kwargs.get("other", args[1] if len(args) > 1 else None)
        if kwargs.get("rounding_mode") is not None:
            raise Unsupported(f"{op} with rounding_mode")
        return _new(program, op, _operand(program, args[0]), _operand(program, other))
    return record


def _unary(op: str) -> Callable[[Program, list[Any], dict[str, Any]], TensorProxy]:
    def record(program: Program, args: list[Any], kwargs: dict[str, Any]) -> TensorProxy:
        if kwargs.get("memory_format") not in (None, torch.preserve_format, torch.contiguous_format):
            raise Unsupported(f"{op} with memory_format")
        return _new(program, op, _operand(program, args[0]))
    return record


def _op_lerp(program: Program, args: list[Any], kwargs: dict[str, Any]) -> TensorProxy:
    weight = kwargs.get("weight", args[2] if len(args) > 2 else None)
    return _new(program, "lerp", _operand(program, args[0]), _operand(program, kwargs.get("end", args[1])),
                _scalar_only(program, weight, "lerp weight"))


def _op_addc(op: str) -> Callable[[Program, list[Any], dict[str, Any]], TensorProxy]:
    def record(program: Program, args: list[Any], kwargs: dict[str, Any]) -> TensorProxy:
        value = kwargs.get("value", args[3] if len(args) > 3 else 1)
        tensors = [_operand(program, a) for a in args[:3]]
        if any(kind != "e" for kind, _ in tensors):
            raise Unsupported(f"{op} with a number operand")
        return _new(program, op, *tensors, _scalar_only(program, value, f"{op} value"))
    return record


def _op_pow(program: Program, args: list[Any], kwargs: dict[str, Any]) -> TensorProxy:
    exponent = args[1]
    if not isinstance(args[0], TensorProxy) or not _is_number(exponent) or float(exponent) not in (2.0, 0.5):
        raise Unsupported("pow other than tensor ** 2 or tensor ** 0.5")
    op = "square" if float(exponent) == 2.0 else "sqrt"
    return _new(program, op, _operand(program, args[0]))


def _op_clamp(program: Program, args: list[Any], kwargs: dict[str, Any]) -> TensorProxy:
    low = kwargs.get("min", args[1] if len(args) > 1 else None)
    high = kwargs.get("max", args[2] if len(args) > 2 else None)
    node = _operand(program, args[0])
    if low is not None:
        node = ("e", program.element("clamp_min", (node, _scalar_only(program, low, "clamp min"))))
    if high is not None:
        node = ("e", program.element("clamp_max", (node, _scalar_only(program, high, "clamp max"))))
    if low is None and high is None:
        raise Unsupported("clamp without bounds")
    return TensorProxy(program, node[1])


TENSOR_OPS: dict[str, Callable[[Program, list[Any], dict[str, Any]], TensorProxy]] = {
    "add": _op_add,
    "sub": lambda program, args, kwargs: _op_add(program, args, kwargs, sign=-1.0),
    "rsub": _op_rsub,
    "mul": _binary("mul"),
    "div": _binary("div"),
    "rdiv": _binary("rdiv"),
    "maximum": _binary("maximum"),
    "minimum": _binary("minimum"),
    "lerp": _op_lerp,
    "addcmul": _op_addc("addcmul"),
    "addcdiv": _op_addc("addcdiv"),
    "sqrt": _unary("sqrt"),
    "rsqrt": _unary("rsqrt"),
    "sign": _unary("sign"),
    "neg": _unary("neg"),
    "abs": _unary("abs"),
    "square": _unary("square"),
    "clone": _unary("clone"),
    "detach": _unary("clone"),
    "contiguous": _unary("clone"),
    "pow": _op_pow,
    "clamp": _op_clamp,
}

def flatten_hypers(hypers: Mapping[str, Any]) -> tuple[list[float], tuple[Any, ...]]:
    """The numeric hyper-parameters as one list of floats (the program's inputs, betas as two), and the
    key of everything else (flags, and where each number sits). A tensor raises :class:`Unsupported`."""
    numbers: list[float] = []
    key: list[Any] = []
    for name, value in hypers.items():
        kind = type(value)  # the usual types first, each exactly as the general tests below take it
        if kind is float:
            numbers.append(value)
            key.append((name, "number"))
            continue
        if kind is bool or value is None:
            key.append((name, value))
            continue
        if kind is tuple and len(value) == 2 and type(value[0]) is float and type(value[1]) is float:
            numbers += value
            key.append((name, "numbers", 2))
            continue
        if isinstance(value, torch.Tensor):
            raise Unsupported(f"hyper-parameter {name} is a tensor")
        if _is_number(value):
            numbers.append(float(value))
            key.append((name, "number"))
        elif isinstance(value, (tuple, list)) and all(_is_number(v) for v in value):
            numbers.extend(float(v) for v in value)
            key.append((name, "numbers", len(value)))
        elif isinstance(value, (bool, str, type(None))):
            key.append((name, value))
        else:
            raise Unsupported(f"hyper-parameter {name} is a {type(value).__name__}")
    return numbers, tuple(key)


def trace_problem(update: Callable[..., Any], screen: Screen | None = None) -> str | None:
    """Why ``update`` cannot be traced for any values, from its bytecode (:mod:`._type_checks`,
    :mod:`._outside`; ``screen``: its :func:`._outside.outside_reads`, where the caller has it), or None."""
    screen = outside_reads(update) if screen is None else screen
    if screen.type_look:
        return f"the update reads a value's type ({screen.type_look}); a trace cannot follow that branch"
    if screen.problem:
        return f"{screen.problem}: a trace would keep what it saw"
    return None


def trace(update: Callable[..., Any], hypers: Mapping[str, Any], buffers: Sequence[str], maximize: bool,
          step: float | None) -> Program:
    """Record ``update`` for a group with these hyper-parameters and (present) buffers; ``step`` is
    the step count the guards see (None for a rule that counts none)."""
    problem = trace_problem(update)
    if problem is not None:
        raise Unsupported(problem)
    program = Program(outside=snapshot(outside_reads(update).locations))
    numbers, _ = flatten_hypers(hypers)
    leaves = iter(program.scalar("hyper", (k,), value, False) for k, value in enumerate(numbers))
    inputs: dict[str, Any] = {}
    for name, value in hypers.items():
        if _is_number(value):
            inputs[name] = next(leaves)
        elif isinstance(value, (tuple, list)) and not isinstance(value, str) and all(_is_number(v) for v in value):
            inputs[name] = type(value)(next(leaves) for _ in value)
        else:
            inputs[name] = value
    step_proxy = None if step is None else program.scalar("step", (), float(step), True)
    param = TensorProxy(program, program.element("input", (0,)))
    grad = TensorProxy(program, program.element("input", (1,)))
    if maximize:
        grad = _new(program, "neg", ("e", grad.node))
    state = {name: TensorProxy(program, program.element("input", (2 + i,))) for i, name in enumerate(buffers)}
    originals = {name: proxy.node for name, proxy in state.items()}
    _REFUSED.messages = []
    try:
        result = update(param, grad, dict(state), step=step_proxy, **inputs)
    except Unsupported:
        raise
    except Exception as error:  # the rule did something a stand-in cannot do (e.g. a torch.* factory)
        raise Unsupported(f"tracing failed ({type(error).__name__}: {str(error)[:120]})") from None
    finally:
        refused, _REFUSED.messages = _REFUSED.messages, None
    if refused:
        raise Unsupported(f"{refused[0]} (the update caught the refusal and went on)")
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], TensorProxy)
            and isinstance(result[1], Mapping)):
        raise Unsupported("update did not return (tensor, dict of tensors) on the stand-ins")
    new_param, new_state = result
    if new_param.node != 0:
        program.outputs[0] = new_param.node
    for name, value in new_state.items():
        if name not in state or not isinstance(value, TensorProxy):
            raise Unsupported(f"update returned state {name!r} that is not a declared buffer tensor")
        if value.node != originals[name]:
            program.outputs[2 + list(state).index(name)] = value.node
    return program


def guard_nodes(program: Program) -> frozenset[int]:
    """The scalar nodes the guards read, directly or through others (cached on the program)."""
    cached = getattr(program, "_guard_nodes", None)
    if cached is None:
        needed: set[int] = set()
        pending = [index for left, _, right, _ in program.guards for index in (left, right)]
        while pending:
            index = pending.pop()
            if index in needed:
                continue
            needed.add(index)
            op, args = program.scalar_ops[index]
            if op not in ("hyper", "const", "step"):
                pending.extend(args)
        cached = frozenset(needed)
        object.__setattr__(program, "_guard_nodes", cached)
    return cached


def guard_inputs(program: Program) -> frozenset[int]:
    """The hyper-parameter positions (in :func:`flatten_hypers`'s list) the guards depend on."""
    return frozenset(program.scalar_ops[i][1][0] for i in guard_nodes(program) if program.scalar_ops[i][0] == "hyper")


def guards_hold(program: Program, numbers: Sequence[float]) -> bool:
    """Whether every comparison of the trace has the same outcome for these hyper-parameter values (the
    guard nodes in Python doubles, as :func:`evaluate_scalars` computes them: NaN where an op raises)."""
    if not program.guards:
        return True
    check = getattr(program, "_guards_hold", None)
    if check is None:
        check = _scalar_function(program, guard_nodes(program), None)
        object.__setattr__(program, "_guards_hold", check)
    return check(numbers)


def membership(program: Program, steps: Sequence[float]) -> Callable[[Sequence[float]], bool]:
    """A function of hyper-parameter numbers (:func:`flatten_hypers`'s): whether the program's whole scalar
    arithmetic, run in Python doubles as the rule runs it, raises nowhere (no division by zero, no overflow,
    no complex power) at each step count in ``steps`` (once, without a step, when empty), and every guard
    has its recorded outcome. The values for which it is true run the rule's ``update`` down the path this
    trace recorded (the shape probe's classes, :mod:`.probe`)."""
    return _scalar_function(program, frozenset(range(len(program.scalar_ops))), tuple(steps))


def _scalar_function(program: Program, nodes: frozenset[int], steps: tuple[float, ...] | None
                     ) -> Callable[[Sequence[float]], bool]:
    """Straight-line Python for ``nodes`` of the scalar program and its guards (a few microseconds a call,
    against tens for :func:`evaluate_scalars`' loop). ``steps`` None: :func:`guards_hold`'s check (NaN where
    an op raises, no step nodes); else :func:`membership`'s (False where any op raises)."""
    names: dict[str, Any] = {"_float": float, "_nan": float("nan"), "_steps": steps}
    fixed: list[str] = []
    stepped: list[str] = []
    for index, ((op, args), steps_on) in enumerate(zip(program.scalar_ops, program.scalar_steps, strict=True)):
        if index not in nodes:
            continue
        if op == "hyper":
            line = f"s{index} = n[{args[0]}]"
        elif op == "const":
            names[f"c{index}"] = float(args[0])
            line = f"s{index} = c{index}"
        elif op == "step":
            line = f"s{index} = t"
        elif op == "neg":
            line = f"s{index} = -s{args[0]}"
        elif op == "abs":
            line = f"s{index} = abs(s{args[0]})"
        else:
            left, right = f"s{args[0]}", f"s{args[1]}"
            value = {"add": f"{left} + {right}", "sub": f"{left} - {right}", "mul": f"{left} * {right}",
                     "div": f"{left} / {right}", "pow": f"_float({left} ** {right})"}[op]
            if steps is None and op in ("div", "pow"):  # as evaluate_scalars: NaN where it raises
                line = (f"try:\n    s{index} = {value}\nexcept (ZeroDivisionError, OverflowError, ValueError):\n"
                        f"    s{index} = _nan")
            else:
                line = f"s{index} = {value}"
        (stepped if steps_on else fixed).append(line)
    symbols = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
    verdict = " and ".join(f"(s{left} {symbols[op]} s{right}) is {outcome}"
                           for left, op, right, outcome in program.guards) or "True"
    body = fixed
    if steps is not None:
        if steps and stepped:
            body = [*fixed, "for t in _steps:", *("    " + line for line in "\n".join(stepped).split("\n"))]
        body = ["try:", *("    " + line for line in "\n".join(body).split("\n")),
                "except Exception:", "    return False"]
    source = "def check(n):\n" + "".join(f"    {line}\n" for line in "\n".join(body).split("\n") if line) + \
        f"    return {verdict}\n"
    exec(source, names)  # generated from the program's own op names and node numbers only
    return names["check"]


def evaluate_scalars(program: Program, numbers: Sequence[float], step: float | None,
                     only: frozenset[int] | None = None) -> list[float]:
    """The scalar program in Python doubles (step-dependent nodes are NaN when ``step`` is None; so are
    the nodes not in ``only``, when given)."""
    values: list[float] = []
    for index, ((op, args), steps) in enumerate(zip(program.scalar_ops, program.scalar_steps, strict=True)):
        if (steps and step is None) or (only is not None and index not in only):
            values.append(float("nan"))
        elif op == "hyper":
            values.append(float(numbers[args[0]]))
        elif op == "const":
            values.append(float(args[0]))
        elif op == "step":
            values.append(float(step))  # type: ignore[arg-type]
        elif op == "neg":
            values.append(-values[args[0]])
        elif op == "abs":
            values.append(abs(values[args[0]]))
        else:
            try:
                values.append(float(SCALAR_BINARY[op](values[args[0]], values[args[1]])))
            except (ZeroDivisionError, OverflowError, ValueError):
                values.append(float("nan"))
    return values
