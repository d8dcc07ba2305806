"""Does a rule's update look at a value's type? The trace (:mod:`._trace`) cannot see that.

The trace runs the update on stand-ins that record every comparison it makes on a hyper-parameter
(``beta > 0.5``) and refuse every other way of reading one: ``float(beta)``, hashing, an attribute
(``hasattr``), its text (``str``, ``repr``, ``format``), a shape. What a stand-in cannot intercept is a
look at its type: ``type(beta)``, ``isinstance(beta, float)``, ``issubclass``, ``beta.__class__``, a
``match`` class pattern answer differently on a stand-in than on the real number, so the traced program
can follow another branch than the update takes, and a comparison behind such a test (``type(beta) is
float and beta > 0.5``) is never recorded: no guard would notice the value crossing it (the fused step
gave -0.20 where the core gives -0.11; a red team then found seven more spellings of such a look). So an
update that looks at a type is not traced, and its groups step on the core, with the reason. This module
reads the bytecode of the update, of the functions nested in it, and of what it reaches by a global or
enclosing name, a default argument or a ``functools.partial`` (a few levels deep): a type builtin under
any name (an alias is the same object), ``__class__``, a class pattern. Callees reached through an
attribute of a module or object are not read; descentlab's own ``optim`` helpers (:mod:`.ops`), which
test only whether an argument is a tensor, are trusted.
"""

from __future__ import annotations

import builtins
import dis
import functools
import types
from collections.abc import Callable
from typing import Any

TYPE_BUILTINS = (type, isinstance, issubclass)
"""The builtins that look at a type, recognised by identity (an alias is the same object)."""
TYPE_ATTRIBUTES = frozenset({"__class__"})
TYPE_OPCODES = frozenset({"MATCH_CLASS"})
"""``match x: case float():`` is an isinstance test without a name."""
NAME_OPCODES = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF", "LOAD_CLOSURE"})
ATTRIBUTE_OPCODES = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
DEPTH = 3
"""How many calls deep functions reached by name are read."""
TRUSTED_PREFIX = "descentlab.optim"


def _code_objects(code: types.CodeType) -> list[types.CodeType]:
    found = [code]
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            found.extend(_code_objects(constant))
    return found


def _is_type_builtin(value: Any) -> bool:
    return any(value is builtin for builtin in TYPE_BUILTINS)


def _callees(value: Any) -> list[Any]:
    """The Python functions behind ``value``: itself, a ``functools.partial``'s function and arguments, a
    bound method's function."""
    if isinstance(value, functools.partial):
        return [value.func, *value.args, *value.keywords.values()]
    if isinstance(value, types.MethodType):
        return [value.__func__]
    return [value] if isinstance(value, types.FunctionType) else []


@functools.lru_cache(maxsize=256)
def type_inspection(function: Callable[..., Any], depth: int = DEPTH) -> str | None:
    """Where ``function`` — or a function it reaches by a global or enclosing name, a default argument or a
    ``functools.partial`` — looks at a type: calls ``type``, ``isinstance`` or ``issubclass`` (under any
    name), reads ``__class__`` or matches a class pattern. "<qualified name> <what it does>", else None."""
    seen: set[int] = set()

    def visit(target: Any, level: int) -> str | None:
        for callee in _callees(target):
            if _is_type_builtin(callee):
                return f"{getattr(target, '__qualname__', target)!s} is given {callee.__name__}()"
            found = visit_function(callee, level)
            if found:
                return found
        return None

    def visit_function(target: Any, level: int) -> str | None:
        code = getattr(target, "__code__", None)
        if not isinstance(code, types.CodeType) or id(code) in seen:
            return None
        seen.add(id(code))
        module = getattr(target, "__module__", "") or ""
        if level > 0 and module.startswith(TRUSTED_PREFIX):
            return None
        where = getattr(target, "__qualname__", "an update")
        namespace = dict(vars(builtins))
        namespace.update(getattr(target, "__globals__", {}))
        for name, cell in zip(code.co_freevars, getattr(target, "__closure__", None) or (), strict=False):
            try:
                namespace[name] = cell.cell_contents
            except ValueError:  # an empty cell
                pass
        defaults = [*(getattr(target, "__defaults__", None) or ()),
                    *(getattr(target, "__kwdefaults__", None) or {}).values()]
        for value in defaults:
            if _is_type_builtin(value):
                return f"{where} has {value.__name__}() as a default argument"
        for each in _code_objects(code):
            for instruction in dis.get_instructions(each):
                if instruction.opname in TYPE_OPCODES:
                    return f"{where} matches a class pattern"
                if instruction.opname in ATTRIBUTE_OPCODES and instruction.argval in TYPE_ATTRIBUTES:
                    return f"{where} reads {instruction.argval}"
                if instruction.opname not in NAME_OPCODES:
                    continue
                value = namespace.get(instruction.argval)
                if _is_type_builtin(value):
                    return f"{where} calls {value.__name__}()"
                if level < depth:
                    found = visit(value, level + 1)
                    if found:
                        return found
        if level < depth:
            for value in defaults:
                found = visit(value, level + 1)
                if found:
                    return found
        return None

    return visit(function, 0)
