"""Does a rule's update look at a value's type? The trace (:mod:`._trace`) cannot see that.

The trace runs the update on stand-ins that record every comparison it makes on a hyper-parameter
(``beta > 0.5``) and refuse every other way of reading one (``float(beta)``, hashing, a shape). One thing
they cannot intercept: ``type(beta)``, ``isinstance(beta, float)``, ``issubclass`` — on a stand-in these
answer differently from the real number, so the traced program can follow another branch than the
update takes, and a comparison behind such a test (``type(beta) is float and beta > 0.5``) is never
recorded, so no guard would notice when the value crosses it. An update whose code — its own, the
functions nested in it, and the plain functions it calls by a global or enclosing name (a few levels
deep) — names one
of these builtins is therefore not traced: its groups step on the core, with the reason. Callees reached
another way (an attribute of a module or object) are not read; descentlab's own ``optim`` helpers
(:mod:`.ops`), which test only whether an argument is a tensor, are trusted.
"""

from __future__ import annotations

import dis
import functools
import types
from collections.abc import Callable
from typing import Any

TYPE_BUILTINS = frozenset({"type", "isinstance", "issubclass"})
DEPTH = 3
"""How many calls deep plain functions called by a global name are read."""
TRUSTED_PREFIX = "descentlab.optim"


def _code_objects(code: types.CodeType) -> list[types.CodeType]:
    found = [code]
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            found.extend(_code_objects(constant))
    return found


@functools.lru_cache(maxsize=256)
def type_inspection(function: Callable[..., Any], depth: int = DEPTH) -> str | None:
    """Where ``function`` (or what it calls by a global name) names ``type``, ``isinstance`` or
    ``issubclass``: "<qualified name> calls <builtin>()", else None."""
    seen: set[int] = set()

    def visit(target: Any, level: int) -> str | None:
        code = getattr(target, "__code__", None)
        if not isinstance(code, types.CodeType) or id(code) in seen:
            return None
        seen.add(id(code))
        module = getattr(target, "__module__", "") or ""
        if level > 0 and module.startswith(TRUSTED_PREFIX):
            return None
        namespace = dict(getattr(target, "__globals__", {}))
        for name, cell in zip(code.co_freevars, getattr(target, "__closure__", None) or (), strict=False):
            try:
                namespace[name] = cell.cell_contents
            except ValueError:  # an empty cell
                pass
        for each in _code_objects(code):
            for instruction in dis.get_instructions(each):
                if instruction.opname not in ("LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF"):
                    continue
                name = instruction.argval
                if name in TYPE_BUILTINS and name not in namespace:
                    return f"{getattr(target, '__qualname__', name)} calls {name}()"
                callee = namespace.get(name)
                if level < depth and isinstance(callee, types.FunctionType):
                    found = visit(callee, level + 1)
                    if found:
                        return found
        return None

    return visit(function, 0)
