"""The functions a rule's update reaches, for the screens that read its bytecode before a trace.

A trace (:mod:`._trace`) runs the update once, on stand-ins, and keeps what it computed; two things it
cannot see from inside: a look at a value's type (:mod:`._type_checks`) and a value read from outside
the rule — a module global, a closure variable, a module's attribute — that may change after the trace
(:mod:`._outside`). Both read the bytecode of the same functions: the update, the functions nested in
it, and what it reaches by a global or enclosing name, a default argument, a ``functools.partial`` or a
bound method — also through a module's or class's attribute (``helpers.scale(lr)``) — :data:`DEPTH`
calls deep (a function deeper than that is reported, not trusted). Python functions of descentlab's
``optim`` (:mod:`.ops`) and of torch are trusted below the top. Callees reached through an attribute of
an object are not read (the outside screen refuses an update that reads an object at all).
"""

from __future__ import annotations

import builtins
import dis
import functools
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

NAME_OPCODES = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF", "LOAD_CLOSURE", "LOAD_CLASSDEREF"})
ATTRIBUTE_OPCODES = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
DEPTH = 3
"""How many calls deep functions reached by name are read."""
TRUSTED_PACKAGES = ("descentlab.optim", "torch")
"""Python functions of these packages (matched by whole name) are not read below the top: descentlab's
own helpers (:mod:`.ops`) and torch's (whose own globals are its configuration, not the rule's). Their
C functions are screened by name (:mod:`._outside`)."""
MISSING = object()
"""What a place that holds nothing reads as."""


@dataclass(frozen=True)
class NameLoad:
    """One load of a name in a reached function's bytecode: its value now and where it lives."""

    where: str
    """The function's qualified name."""
    name: str
    value: Any
    holder: Any
    """The function's globals (a dict), the closure cell, or the builtins' dict."""
    attributes: tuple[str, ...]
    """The attribute names read right after it (``module.NAME``: ``("NAME",)``)."""


@dataclass(frozen=True)
class Reached:
    """One function the walk reads."""

    target: types.FunctionType
    where: str
    level: int
    defaults: tuple[Any, ...]
    instructions: tuple[dis.Instruction, ...]
    loads: tuple[NameLoad, ...]
    beyond: tuple[str, ...] = ()
    """Functions it calls that lie deeper than the walk reads (a screen refuses rather than trusts them)."""


def callees(value: Any) -> list[Any]:
    """The Python functions behind ``value``: itself, a ``functools.partial``'s function and arguments, a
    bound method's function."""
    if isinstance(value, functools.partial):
        return [value.func, *value.args, *value.keywords.values()]
    if isinstance(value, types.MethodType):
        return [value.__func__]
    return [value] if isinstance(value, types.FunctionType) else []


@dataclass(frozen=True)
class Resolved:
    """What a name load reads in the end (:func:`resolve`)."""

    value: Any
    owner: Any
    """The module or class whose attribute it is, or None: the name itself."""
    attribute: str
    dotted: str
    """``helpers.scale``."""
    rest: tuple[str, ...] = ()
    """Attributes read after it, of a value that is neither a module nor a class (``fn.factor``)."""


def resolve(load: NameLoad) -> Resolved:
    """What ``load`` reads through its attribute chain where the chain goes through modules and classes
    (``helpers.scale``, ``Settings.CLIP``): that attribute (``MISSING`` where absent); else the name."""
    found = Resolved(load.value, None, load.name, load.name)
    for index, attribute in enumerate(load.attributes):
        if not isinstance(found.value, (types.ModuleType, type)):
            return replace(found, rest=load.attributes[index:])
        found = Resolved(getattr(found.value, attribute, MISSING), found.value, attribute,
                         f"{found.dotted}.{attribute}")
    return found


def trusted_module(module: str) -> bool:
    """Whether the module named ``module`` is in a package of :data:`TRUSTED_PACKAGES` (by whole name)."""
    return any(module == package or module.startswith(package + ".") for package in TRUSTED_PACKAGES)


def trusted(target: Any) -> bool:
    """Whether ``target`` (a function, a class) belongs to a package of :data:`TRUSTED_PACKAGES`."""
    return trusted_module(getattr(target, "__module__", "") or "")


def _code_objects(code: types.CodeType) -> list[types.CodeType]:
    found = [code]
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            found.extend(_code_objects(constant))
    return found


def _loads(target: types.FunctionType, instructions: list[dis.Instruction]) -> list[NameLoad]:
    """The name loads of ``instructions``, resolved as the function resolves them (a closure cell, then
    its globals, then the builtins)."""
    code = target.__code__
    cells = dict(zip(code.co_freevars, target.__closure__ or (), strict=False))
    global_names = target.__globals__
    loads = []
    for index, instruction in enumerate(instructions):
        if instruction.opname not in NAME_OPCODES:
            continue
        name = instruction.argval
        holder: Any = None
        value: Any = MISSING
        if name in cells:
            holder = cells[name]
            try:
                value = holder.cell_contents
            except ValueError:  # an empty cell
                continue
        elif instruction.opname in ("LOAD_DEREF", "LOAD_CLOSURE", "LOAD_CLASSDEREF"):
            continue  # a cell of a nested function, filled at run time: not a value from outside
        elif name in global_names:
            holder, value = global_names, global_names[name]
        elif hasattr(builtins, name):
            holder, value = vars(builtins), getattr(builtins, name)
        else:
            continue
        attributes = []
        for following in instructions[index + 1:]:
            if following.opname not in ATTRIBUTE_OPCODES:
                break
            attributes.append(following.argval)
        loads.append(NameLoad(getattr(target, "__qualname__", "an update"), name, value, holder, tuple(attributes)))
    return loads


def reached(function: Callable[..., Any], depth: int = DEPTH) -> Iterator[Reached]:
    """The update and the functions it reaches (module docstring), each once, outermost first."""
    seen: set[int] = set()
    pending: list[tuple[Any, int]] = [(function, 0)]
    while pending:
        value, level = pending.pop(0)
        for target in callees(value):
            code = getattr(target, "__code__", None)
            if not isinstance(code, types.CodeType) or id(target) in seen:
                continue  # (each function once; two closures of one code object are two functions)
            seen.add(id(target))
            if level > 0 and trusted(target):
                continue
            instructions = [i for each in _code_objects(code) for i in dis.get_instructions(each)]
            defaults = (*(target.__defaults__ or ()), *(target.__kwdefaults__ or {}).values())
            loads = _loads(target, instructions)
            further = [value for load in loads for value in (load.value, resolve(load).value)] + list(defaults)
            beyond = () if level < depth else tuple(
                getattr(c, "__qualname__", "?") for value in further for c in callees(value)
                if isinstance(c, types.FunctionType) and not trusted(c) and id(c) not in seen)
            yield Reached(target, getattr(target, "__qualname__", "an update"), level, defaults,
                          tuple(instructions), tuple(loads), beyond)
            if level < depth:
                pending.extend((value, level + 1) for value in further)
