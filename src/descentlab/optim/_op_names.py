"""The names of the torch ops the trace records (:data:`._trace.TENSOR_OPS`), where a module must know
them without importing the trace (the outside screen, :mod:`._outside`, which the trace imports)."""

from __future__ import annotations

TENSOR_OP_NAMES = frozenset({"add", "sub", "rsub", "mul", "div", "rdiv", "maximum", "minimum", "lerp", "addcmul",
                             "addcdiv", "sqrt", "rsqrt", "sign", "neg", "abs", "square", "clone", "detach",
                             "contiguous", "pow", "clamp"})
"""The keys of :data:`._trace.TENSOR_OPS` (a test holds them equal)."""
ALIASES = {"true_divide": "div", "negative": "neg", "subtract": "sub", "multiply": "mul", "clip": "clamp",
           "absolute": "abs", "__add__": "add", "__mul__": "mul", "__sub__": "sub", "__truediv__": "div",
           "__radd__": "add", "__rmul__": "mul", "__rsub__": "rsub", "__rtruediv__": "rdiv", "__neg__": "neg",
           "__pow__": "pow", "__abs__": "abs"}
"""Other names torch gives the same ops (method, function and operator spellings)."""
