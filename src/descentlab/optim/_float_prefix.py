"""The per-step scalar math of a compiled update, run on Python floats instead of 0-dim tensors.

:mod:`._compile` splits a rule's per-step scalar math (Adam: ``1 − β1ᵗ``, ``√(1 − β2ᵗ)``,
``−γ / (1 − β1ᵗ)``) off the element loop into a small graph run once per step. Run as torch ops on
0-dim float64 tensors, that graph is ten torch ops a step for Adam, each going through the dispatcher
with caches emptied by the pass over the flat buffers (the first such op costs 30-100 us:
benchmarks/step_overheads.py), where a few Python float operations do.

:func:`float_program` turns such a graph into a function on Python floats giving the same bits:

* ``+ − × ÷`` and unary minus are IEEE double operations in both;
* ``a ** b`` follows torch's float64 kernels: a tensor raised to the number 0, 1, 2, 3, −1 or −2
  uses its special case (``x·x``, ``1/x``…), anything else ``pow`` from libm, as ``math.pow`` does;
* square roots (``sqrt``, ``** 0.5``, ``** −0.5``) are NOT correctly rounded by torch's vectorised
  float64 kernel (1.5 % of inputs differ from ``math.sqrt`` by one unit in the last place:
  benchmarks/step_overheads.py), so they stay torch ops, on a reused NumPy-backed 0-dim tensor: one op instead of ten.

It returns None for a graph with any other operation, or inputs/outputs that are not 0-dim float64
CPU tensors or numbers. Where torch would give inf or nan without complaint (a division by zero, an
overflowing power, the square root of a negative number), Python raises or goes complex; the
program then returns None for that call and the caller runs the graph as torch ops.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.fx

_BINARY: dict[Any, Callable[[float, float], float]] = {
    operator.add: operator.add, operator.sub: operator.sub, operator.mul: operator.mul,
    operator.truediv: operator.truediv,
}
_SQRT_TARGETS = (torch.sqrt, "sqrt")

_SPECIAL_EXPONENTS: dict[float, Callable[[float], float]] = {
    0.0: lambda x: 1.0,
    1.0: lambda x: x,
    2.0: lambda x: x * x,
    3.0: lambda x: x * x * x,
    -1.0: lambda x: 1.0 / x,
    -2.0: lambda x: 1.0 / (x * x),
}
"""torch's ``tensor ** number`` shortcuts (ATen's Pow.cpp and PowKernel.cpp) that are exact float64
arithmetic; 0.5 and −0.5 go to its sqrt and rsqrt kernels (:data:`_ROOT_EXPONENTS`)."""
_ROOT_EXPONENTS: dict[float, Callable[[torch.Tensor], torch.Tensor]] = {0.5: torch.sqrt, -0.5: torch.rsqrt}

_FAILED = (ZeroDivisionError, OverflowError, ValueError)


def float_program(graph_module: torch.fx.GraphModule) -> Callable[[Sequence[Any]], list[torch.Tensor] | None] | None:
    """A float version of ``graph_module`` (module docstring): called with the graph's inputs, it
    returns its outputs as 0-dim float64 tensors (the same tensors each call, rewritten through
    NumPy), or None when this call must run as torch ops. None when the graph has other operations."""
    nodes = list(graph_module.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    index = {n: i for i, n in enumerate(placeholders)}
    output = next(n for n in nodes if n.op == "output")
    results = output.args[0]
    if not isinstance(results, (tuple, list)) or not all(_is_float64_scalar(n) for n in results):
        return None
    steps: list[tuple[torch.fx.Node, Callable[..., float], tuple[Any, ...]]] = []
    scratch = _Scratch()
    for node in nodes:
        if node.op in ("placeholder", "output"):
            continue
        operation = _operation(node, scratch)
        if operation is None or node.kwargs:
            return None
        steps.append((node, operation, node.args))
    used = [n for n in placeholders if n.users]
    if not all(_is_float64_scalar(n) or _is_number(n) for n in used):
        return None
    values = np.zeros(len(results), dtype=np.float64)
    tensors = [torch.from_numpy(values[i:i + 1].reshape(())) for i in range(len(results))]

    def run(inputs: Sequence[Any]) -> list[torch.Tensor] | None:
        env: dict[torch.fx.Node, Any] = {}
        for node in used:
            value = inputs[index[node]]
            env[node] = value.item() if isinstance(value, torch.Tensor) else value
        try:
            for node, operation, args in steps:
                result = operation(*[env[a] if isinstance(a, torch.fx.Node) else a for a in args])
                if isinstance(result, complex):
                    return None
                env[node] = result
        except _FAILED:
            return None
        for i, node in enumerate(results):  # item by item: no list built and converted
            values[i] = env[node]
        return tensors

    return run


class _Scratch:
    """A reused 0-dim float64 tensor written through NumPy, for the few operations left to torch."""

    def __init__(self) -> None:
        self.value = np.zeros(1, dtype=np.float64)
        self.tensor = torch.from_numpy(self.value[0:1].reshape(()))

    def unary(self, function: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., float]:
        def run(x: float, *_ignored: Any) -> float:
            self.value[0] = x
            return function(self.tensor).item()

        return run


def _operation(node: torch.fx.Node, scratch: _Scratch) -> Callable[..., float] | None:
    target = node.target
    if node.op == "call_method" and target == "item":
        return lambda x: x
    if (node.op == "call_method" and target == "sqrt") or (node.op == "call_function" and target in _SQRT_TARGETS):
        return scratch.unary(torch.sqrt)
    if node.op != "call_function":
        return None
    if target in _BINARY:
        return _BINARY[target]
    if target is operator.neg:
        return operator.neg
    if target is operator.pow:
        base, exponent = node.args
        if isinstance(base, torch.fx.Node) and _is_float64_scalar(base) and isinstance(exponent, (int, float)):
            root = _ROOT_EXPONENTS.get(float(exponent))
            if root is not None:
                return scratch.unary(root)
            special = _SPECIAL_EXPONENTS.get(float(exponent))
            if special is not None:
                return lambda x, _e: special(x)
        return _libm_pow
    return None


def _libm_pow(base: float, exponent: float) -> float:
    return math.pow(base, exponent)


def _example(node: Any) -> Any:
    return node.meta.get("example_value", node.meta.get("val")) if isinstance(node, torch.fx.Node) else node


def _is_float64_scalar(node: Any) -> bool:
    value = _example(node)
    return (isinstance(value, torch.Tensor) and value.dim() == 0 and value.dtype == torch.float64
            and value.device.type == "cpu")


def _is_number(node: Any) -> bool:
    value = _example(node)
    return isinstance(value, (int, float, torch.SymInt, torch.SymFloat)) and not isinstance(value, bool)
