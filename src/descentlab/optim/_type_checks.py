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
reads the bytecode of the functions the update reaches (:mod:`._bytecode`, a module's helper function
included) for a type builtin under any name (an alias is the same object; also as a default argument or
inside a ``functools.partial``), ``__class__`` and a class pattern. descentlab's own ``optim`` helpers
(:mod:`.ops`), which test only whether an argument is a tensor, are trusted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ._bytecode import ATTRIBUTE_OPCODES, DEPTH, Reached, callees, reached, resolve

TYPE_BUILTINS = (type, isinstance, issubclass)
"""The builtins that look at a type, recognised by identity (an alias is the same object)."""
TYPE_ATTRIBUTES = frozenset({"__class__"})
TYPE_OPCODES = frozenset({"MATCH_CLASS"})
"""``match x: case float():`` is an isinstance test without a name."""


def _type_builtin_in(value: Any) -> Any:
    """The type builtin ``value`` is or wraps (a ``functools.partial`` of one), else None."""
    return next((v for v in (value, *callees(value)) if any(v is b for b in TYPE_BUILTINS)), None)


def type_inspection(function: Callable[..., Any], depth: int = DEPTH,
                    functions: Sequence[Reached] | None = None) -> str | None:
    """Where ``function`` — or a function it reaches (:func:`._bytecode.reached`) — looks at a type: calls
    ``type``, ``isinstance`` or ``issubclass`` (under any name), reads ``__class__`` or matches a class
    pattern. "<qualified name> <what it does>", else None. ``functions``: the walk, where the caller has it."""
    for function_read in reached(function, depth) if functions is None else functions:
        where = function_read.where
        for value in function_read.defaults:
            builtin = _type_builtin_in(value)
            if builtin is not None:
                return f"{where} has {builtin.__name__}() as a default argument"
        for instruction in function_read.instructions:
            if instruction.opname in TYPE_OPCODES:
                return f"{where} matches a class pattern"
            if instruction.opname in ATTRIBUTE_OPCODES and instruction.argval in TYPE_ATTRIBUTES:
                return f"{where} reads {instruction.argval}"
        for load in function_read.loads:
            value = resolve(load).value  # builtins.isinstance is isinstance
            builtin = _type_builtin_in(value)
            if builtin is value:
                return f"{where} calls {builtin.__name__}()"
            if builtin is not None:
                return f"{where} is given {builtin.__name__}()"
    return None
