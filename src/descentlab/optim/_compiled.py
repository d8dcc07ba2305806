"""Accelerator: the rule's update compiled by ``torch.compile`` (Inductor), one fused loop per piece.

The compiled function takes a piece (:mod:`._pieces`: a slice of one big parameter where it lives,
or a concatenation of small ones), runs the rule's own ``update`` on it and writes the results into
the piece's parameter and buffers, so Inductor fuses the whole step and its write-back into one pass
over memory. It is the stock ``torch.compile`` with the default backend and no private hooks:

* every input that can change the result reaches dynamo as an argument — the rule's ``update``
  function, the buffer names, ``maximize``, every hyper-parameter, the step count, the tensors'
  dtype and device — so dynamo guards each graph by everything it was built for;
* the values that change from step to step — the step count t and the hyper-parameters declared
  ``tensor_ok`` (``lr``, which schedulers move) — go in as 0-dim float64 tensors, as torch.optim's
  compiled step keeps ``step`` as a tensor: a new lr or t never recompiles, and never meets the
  specialisation below;
* Inductor's FX graph cache is off for this function (``options={"fx_graph_cache": False}``): in
  torch 2.13 a Python float that dynamo specialises into the graph (a hyper-parameter used where an
  op needs a number) is not part of that cache's key, so a graph built for β2 = 0.9 was served for
  β2 = 0.999, in the same process or the next (``tests/test_engine_compiled.py`` keeps the case).
  Cost: each process compiles its graphs afresh (seconds per rule variant; nothing is read from disk);
* sizes are dynamic (``dynamic=True``): one graph serves every piece size;
* the other hyper-parameters go in as they are, and dynamo specialises a graph on their values; a
  scheduler that moves one of them every step (CyclicLR and OneCycleLR cycle momentum / β1) would
  recompile at every step, so past :data:`MAX_VARIANTS` sets of values per rule an optimizer runs
  the new ones uncompiled (same pieces, exact numbers) and says so once.

Results equal the core's within the rounding of the parameters' dtype (Inductor may fuse a
multiply-add or reorder the scalar math), never bitwise by promise: this accelerator is opt-in
(``set_engine(opt, "compiled")``). A compilation that fails (no C++ compiler, an op Inductor cannot
take) is reported once and the piece runs uncompiled. Dynamo keeps a bounded number of graphs per
function (``torch._dynamo.config.recompile_limit``): past it, torch itself runs new variants
uncompiled, with the same numbers.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ._pieces import RunPiece, eager_piece, write_back
from .rule import Rule

MAX_VARIANTS = 4
"""Sets of values of the non-tensor hyper-parameters one optimizer compiles per rule (module docstring)."""


def _update_in_place(update: Callable[..., Any], names: tuple[str, ...], maximize: bool, param: torch.Tensor,
                     grad: torch.Tensor, buffers: list[torch.Tensor], step: Any, hypers: dict[str, Any]) -> None:
    if maximize:
        grad = -grad
    new_param, new_state = update(param, grad, dict(zip(names, buffers, strict=True)), step=step, **hypers)
    write_back(param, buffers, names, new_param, new_state)


@functools.cache
def compiled_update() -> Callable[..., None]:
    """The one compiled form of :func:`_update_in_place` (made on first use)."""
    return torch.compile(_update_in_place, dynamic=True, options={"fx_graph_cache": False})


def as_scalar_tensor(value: Any) -> Any:
    """A number as a 0-dim float64 CPU tensor (a graph input, never a specialised constant)."""
    if value is None or isinstance(value, torch.Tensor):
        return value
    return torch.tensor(float(value), dtype=torch.float64)


def compiled_piece(rule: Rule, names: Sequence[str], hypers: Mapping[str, Any], maximize: bool,
                   seen: set[tuple[Any, ...]]) -> RunPiece:
    """Step a piece with the compiled update. ``seen`` (kept by the optimizer) records, per rule,
    that its result was checked (``("checked", name, buffers)``: once, uncompiled, on one element),
    that its compilation failed (``("failed", name)``: said once, then the uncompiled update runs),
    and each set of static values compiled (``("variant", name, values)``, at most :data:`MAX_VARIANTS`)."""
    fallback = eager_piece(rule, names, hypers, maximize)
    inputs = {name: as_scalar_tensor(value) if name in rule.tensor_names else value
              for name, value in hypers.items()}
    if not _may_compile(rule, (tuple(names), maximize, repr(sorted(
            (name, value) for name, value in hypers.items() if name not in rule.tensor_names))), seen):
        return fallback

    def run(param: torch.Tensor, grad: torch.Tensor, buffers: list[torch.Tensor], step: Any) -> None:
        if ("failed", rule.name) in seen:
            fallback(param, grad, buffers, step)
            return
        if ("checked", rule.name, tuple(names)) not in seen:
            _check_on_one_element(fallback, param, grad, buffers, step)
            seen.add(("checked", rule.name, tuple(names)))
        try:
            compiled_update()(rule.update, tuple(names), maximize, param, grad, buffers, as_scalar_tensor(step),
                              inputs)
        except Exception as error:
            seen.add(("failed", rule.name))
            warnings.warn(f"descentlab: compiling rule {rule.name!r} failed ({type(error).__name__}: "
                          f"{str(error)[:200]}); it runs uncompiled", RuntimeWarning, stacklevel=2)
            fallback(param, grad, buffers, step)

    return run


def _may_compile(rule: Rule, values: tuple[Any, ...], seen: set[tuple[Any, ...]]) -> bool:
    if ("variant", rule.name, values) in seen:
        return True
    if sum(1 for entry in seen if entry[:2] == ("variant", rule.name)) < MAX_VARIANTS:
        seen.add(("variant", rule.name, values))
        return True
    if ("too many variants", rule.name) not in seen:
        seen.add(("too many variants", rule.name))
        warnings.warn(f"descentlab: rule {rule.name!r} has seen more than {MAX_VARIANTS} sets of values of its "
                      "hyper-parameters other than lr (a scheduler moving momentum or betas?): new values run "
                      "uncompiled instead of compiling at each step", RuntimeWarning, stacklevel=4)
    return False


def _check_on_one_element(fallback: RunPiece, param: torch.Tensor, grad: torch.Tensor,
                          buffers: list[torch.Tensor], step: Any) -> None:
    """Run the uncompiled update on copies of one element, so a rule returning the wrong shape or
    dtype fails with the core's named error instead of a compiler message."""
    fallback(param[:1].clone(), grad[:1].clone(), [b[:1].clone() for b in buffers], step)
