"""The flat engine's ``torch.compile`` backend: scalar math once per step, the element loop in Inductor.

A rule's update mixes two kinds of work. Per element: ``m ← β1·m + (1 − β1)·g`` and so on. Per step:
everything that depends only on hyper-parameters and the step count — Adam's bias corrections
``1 − β1ᵗ``, ``√(1 − β2ᵗ)``, the step size ``γ / (1 − β1ᵗ)``. Inductor fuses both into one loop and,
since the per-step values are 0-dim float64 tensors, evaluates ``pow`` and ``sqrt`` in double
precision for every element (measured: 2x slower than torch's fused Adam at 20M elements).

:func:`hoisting_backend` splits the graph dynamo captured. A node is *scalar* when every input is a
0-dim tensor input (lr, step, hyper-parameters dynamo turned into tensors) or another scalar node,
and its value is a 0-dim tensor or a number. The scalar nodes run once per call, eagerly, in the same
order and precision as the uncompiled update; the values the rest of the graph reads from them
become extra inputs (numbers as 0-dim float64 tensors read back with ``.item()``) of the remainder,
which :func:`torch._inductor.compile_fx.compile_fx` compiles into the element loop. Nothing here
knows about any particular rule. A graph with nothing to hoist, or with an in-place op on a scalar
value (where moving it could change the order of reads and writes), is compiled as it is.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx

from ._float_prefix import float_program

_NUMBERS = (int, float, bool, torch.SymInt, torch.SymFloat, torch.SymBool)


def hoisting_backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any],
                     compile_fn: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """Compile ``gm`` with the per-step scalar sub-graph split off and run eagerly (module docstring)."""
    if compile_fn is None:
        from torch._inductor.compile_fx import compile_fx as compile_fn
    split = _split(gm, example_inputs)
    if split is None:
        return compile_fn(gm, example_inputs)
    prefix, main = split
    try:
        compiled = compile_fn(main, [*example_inputs, *prefix(*example_inputs)])
    except torch._dynamo.exc.TorchDynamoException:
        raise  # dynamo's own control flow (e.g. restart with floats specialised): not a failure
    except Exception as error:  # an op the split confuses: the graph as dynamo gave it still compiles
        warnings.warn(f"descentlab: compiling with the per-step scalar math split off failed ({type(error).__name__}: "
                      f"{error}); compiling the update unsplit", RuntimeWarning, stacklevel=2)
        return compile_fn(gm, example_inputs)

    def run(*args: Any) -> Any:
        return compiled(*args, *prefix(*args))

    run.hoisted = prefix  # type: ignore[attr-defined]  # for tests and curious users
    entry = _inductor_entry(compiled)
    if entry is not None:
        forward, on_floats = prefix.forward, float_program(prefix)

        def boxed(args: list[Any]) -> Any:
            hoisted = None if on_floats is None else on_floats(args)
            return entry([*args, *(forward(*args) if hoisted is None else hoisted)])

        run.boxed_entry = boxed  # type: ignore[attr-defined]
    return run


def boxed_entry(compiled: Callable[..., Any]) -> Callable[[list[Any]], Any] | None:
    """The compiled graph's own entry point, ``call(list_of_inputs)``, for what :func:`hoisting_backend`
    returned, skipping AOTAutograd's runtime wrapper; None where that wrapper has work to do.

    The wrapper around an inference graph rebuilds outputs, applies input mutations the graph
    returned instead of doing itself, and copies inputs that break the kernel's alignment
    assumptions. When the graph returns nothing (every mutation is done inside it) and no input is
    checked for alignment (CPU kernels assume none), the wrapper only passes the inputs on; calling
    the entry point saves its Python, which runs cold in cache after each pass over the flat buffers
    (with dynamo's layer, :mod:`._direct`: 0.3-0.9 ms a step at 20M elements,
    benchmarks/step_overheads.py). The entry point of a split graph also
    runs the per-step scalar math on Python floats where it can (:mod:`._float_prefix`).
    """
    entry = getattr(compiled, "boxed_entry", None)
    return entry if entry is not None else _inductor_entry(compiled)


def _inductor_entry(compiled: Callable[..., Any]) -> Callable[[list[Any]], Any] | None:
    # compile_fx's result carries the compiled graph's attributes (functools.wraps copies them)
    entry = getattr(compiled, "current_callable", None)
    outputs = getattr(compiled, "output_strides", None)
    checked = getattr(compiled, "inputs_to_check", None)
    if not callable(entry) or outputs is None or len(outputs) or checked is None or len(checked):
        return None
    return entry


def _is_scalar_value(value: Any) -> bool:
    return (isinstance(value, torch.Tensor) and value.dim() == 0) or isinstance(value, _NUMBERS)


def _in_place(node: torch.fx.Node) -> bool:
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return target._schema.is_mutable
    name = target if isinstance(target, str) else getattr(target, "__name__", "")
    return (name.endswith("_") and not name.startswith("_")) or node.kwargs.get("out") is not None


def _split(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]
           ) -> tuple[torch.fx.GraphModule, torch.fx.GraphModule] | None:
    nodes = list(gm.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != len(example_inputs):
        return None
    scalar = {n for n, x in zip(placeholders, example_inputs, strict=True)
              if isinstance(x, torch.Tensor) and x.dim() == 0}
    hoisted: list[torch.fx.Node] = []
    for node in nodes:
        inputs = node.all_input_nodes
        if _in_place(node) and inputs and inputs[0] in scalar:
            return None  # mutating a scalar value: keep the graph's order of reads and writes
        if node.op not in ("call_function", "call_method") or not inputs or not all(i in scalar for i in inputs):
            continue
        if _is_scalar_value(node.meta.get("example_value")) and not _in_place(node):
            scalar.add(node)
            hoisted.append(node)
    # Numbers (a float hyper-parameter dynamo passed as a tensor and read with .item()) are also kept
    # in the remainder: Inductor needs them as the graph's own backed symbols, not fresh unknowns.
    moved = {n for n in hoisted if isinstance(n.meta.get("example_value"), torch.Tensor)}
    boundary = [n for n in hoisted if n in moved and any(u not in scalar for u in n.users)]
    if not boundary:
        return None

    prefix_graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    for node in placeholders:
        env[node] = prefix_graph.placeholder(node.name)
        env[node].meta.update(node.meta)
    for node in hoisted:
        env[node] = prefix_graph.node_copy(node, lambda n: env[n])
    prefix_graph.output(tuple(env[n] for n in boundary))
    prefix = torch.fx.GraphModule(gm, prefix_graph)

    main_graph = torch.fx.Graph()
    env = {}
    for node in placeholders:
        env[node] = main_graph.node_copy(node)
    for i, node in enumerate(boundary):
        env[node] = main_graph.placeholder(f"hoisted_{i}")
        env[node].meta.update(node.meta)
    for node in nodes:
        if node.op != "placeholder" and node not in moved:
            env[node] = main_graph.node_copy(node, lambda n: env[n])
    return prefix, torch.fx.GraphModule(gm, main_graph)
