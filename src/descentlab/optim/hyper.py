"""Hyper-parameter declarations: a name, a default and the set of valid values.

A rule lists its hyper-parameters with these constructors; the optimizer shell builds its
constructor signature, its defaults and its validation from them, so every optimizer —
built-in or a user's own — rejects bad input with the same kind of message:
``Adam: betas[1] must be in [0, 1), got 1.0``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

Checker = Callable[[str, Any], "Exception | None"]
"""``check(name, value)`` returns the error to raise (TypeError or ValueError), or None."""


@dataclass(frozen=True)
class Hyper:
    """One hyper-parameter of a rule.

    ``math`` hyper-parameters are passed to the rule's update function as keyword arguments;
    the others (``foreach``, ``fused``, ...) are engine options kept in the param group for
    torch compatibility only. ``keyword_only`` places the argument after ``*`` in the
    optimizer's constructor, as torch.optim does.
    """

    name: str
    default: Any
    check: Checker
    doc: str = ""
    math: bool = True
    keyword_only: bool = False
    tensor_ok: bool = False
    """lr-like: a one-element tensor is taken (squeezed to 0-dim, as torch's ``_to_scalar``) and may move
    every step (:attr:`.rule.Rule.tensor_names`)."""
    accepts_tensor: bool = False
    """A one-element tensor is taken as it is, checked by its number (torch's Adam takes a tensor
    ``weight_decay``, one that requires grad included), but is not lr-like."""
    clean: Callable[[Any], Any] | None = None
    """Applied to a valid value before it is kept (``betas``: one-element tensors squeezed)."""

    def validate(self, value: Any, owner: str) -> Any:
        """Return ``value`` (0-dim tensors squeezed for lr-like hypers) or raise a named error."""
        if (self.tensor_ok or self.accepts_tensor) and isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(
                    f"{owner}: {self.name} as a tensor must have exactly one element, got shape "
                    f"{tuple(value.shape)}"
                )
            if value.dim() != 0 and self.tensor_ok:
                value = value.squeeze()
            problem = self.check(self.name, float(value.detach()))
        else:
            problem = self.check(self.name, value)
        if problem is not None:
            raise type(problem)(f"{owner}: {problem}")
        return value if self.clean is None else self.clean(value)


def _is_real(value: Any) -> bool:
    """Python and NumPy reals (``np.float32(1e-3)`` is a fine lr); bools are not numbers here."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    return f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def _real_checker(low: float, high: float, low_open: bool, high_open: bool) -> Checker:
    def check(name: str, value: Any) -> Exception | None:
        if not _is_real(value):
            return TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
        value = float(value)
        if math.isnan(value) or math.isinf(value):
            return ValueError(f"{name} must be finite, got {value}")
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (above and below):
            if math.isinf(high):
                bound = f"> {low:g}" if low_open else f">= {low:g}"
                return ValueError(f"{name} must be {bound}, got {value!r}")
            return ValueError(f"{name} must be in {_interval(low, high, low_open, high_open)}, got {value!r}")
        return None

    return check


def real(
    name: str,
    default: float,
    *,
    low: float = 0.0,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    doc: str = "",
    keyword_only: bool = False,
    tensor_ok: bool = False,
    accepts_tensor: bool = False,
) -> Hyper:
    """A finite real number in an interval (default ``[0, inf)``); ``tensor_ok``/``accepts_tensor``: see
    :class:`Hyper`."""
    return Hyper(
        name,
        default,
        _real_checker(low, high, low_open, high_open),
        doc=doc,
        keyword_only=keyword_only,
        tensor_ok=tensor_ok,
        accepts_tensor=accepts_tensor,
    )


def learning_rate(default: float, doc: str = "step size") -> Hyper:
    """``lr``: a finite number >= 0, or a one-element tensor (torch.optim accepts both)."""
    return real("lr", default, doc=doc, tensor_ok=True)


def flag(name: str, default: bool, *, doc: str = "", keyword_only: bool = False) -> Hyper:
    """A boolean switch (``nesterov``, ``amsgrad``, ``centered``, ``maximize``)."""

    def check(name: str, value: Any) -> Exception | None:
        if not isinstance(value, bool):
            return TypeError(f"{name} must be a bool, got {value!r} ({type(value).__name__})")
        return None

    return Hyper(name, default, check, doc=doc, keyword_only=keyword_only)


def real_pair(
    name: str,
    default: tuple[float, float],
    *,
    low: float = 0.0,
    high: float = 1.0,
    high_open: bool = True,
    doc: str = "",
) -> Hyper:
    """Two reals, each in ``[low, high)`` — Adam's ``betas``: two numbers, or two one-element tensors
    (each squeezed to 0-dim, as torch's constructor does with ``tuple(map(_to_scalar, betas))``)."""
    element = _real_checker(low, high, False, high_open)

    def check(name: str, value: Any) -> Exception | None:
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            return TypeError(f"{name} must be a pair of two numbers, got {value!r}")
        if isinstance(value[0], torch.Tensor) != isinstance(value[1], torch.Tensor):
            return ValueError(f"{name} must be either both floats or both Tensors, got {value!r}")
        for index, item in enumerate(value):
            if isinstance(item, torch.Tensor) and item.numel() == 1:
                item = float(item.detach())
            problem = element(f"{name}[{index}]", item)
            if problem is not None:
                return problem
        return None

    return Hyper(name, tuple(default), check, doc=doc, clean=_squeezed)


def _squeezed(value: Any) -> Any:
    """torch's ``_to_scalar`` on each item: a one-element tensor of rank > 0 becomes 0-dim (and the pair a
    tuple, as torch's constructor keeps it); anything else is kept as given."""
    if not any(isinstance(item, torch.Tensor) and item.dim() != 0 for item in value):
        return value
    return tuple(item.squeeze() if isinstance(item, torch.Tensor) and item.dim() != 0 else item for item in value)


def engine_option(name: str, default: Any, doc: str = "", *, keyword_only: bool = True) -> Hyper:
    """A torch.optim kernel switch (``foreach``, ``fused``, ...): kept in the param group for
    checkpoint compatibility and never passed to the math; the shell and the engine read them as torch
    does (:data:`TORCH_ENGINE_DOC`, :func:`engine_option_problem`, :func:`capturable_problem`)."""

    def check(name: str, value: Any) -> Exception | None:
        if value is not None and not isinstance(value, bool):
            return TypeError(f"{name} must be a bool or None, got {value!r} ({type(value).__name__})")
        return None

    return Hyper(name, default, check, doc=doc or TORCH_ENGINE_DOC, math=False, keyword_only=keyword_only)


TORCH_ENGINE_DOC = (
    "accepted for torch.optim compatibility. fused=False, foreach=False or differentiable=True ask for "
    "descentlab's per-tensor core; differentiable=True also steps with autograd on (hypergradients); "
    "fused=True gives the for-loop's numbers; capturable=True raises on CPU parameters as torch does"
)

CAPTURABLE_DEVICES = ("cuda", "xpu", "hpu", "privateuseone", "xla")
"""Where torch 2.13's ``capturable=True`` steps (``torch.utils._foreach_utils._get_capturable_supported_devices``,
copied: the default path uses public APIs only)."""


def engine_option_problem(values: Mapping[str, Any]) -> Exception | None:
    """torch.optim's constructor checks across its engine options, with its messages: ``fused`` with
    ``foreach`` or with ``differentiable`` is refused (a RuntimeError, as torch raises)."""
    if values.get("fused"):
        if values.get("differentiable"):
            return RuntimeError("`fused` does not support `differentiable`")
        if values.get("foreach"):
            return RuntimeError("`fused` and `foreach` cannot be `True` together.")
    return None


def tensors_refused_with_plain_foreach(*names: str) -> Callable[[Mapping[str, Any]], Exception | None]:
    """A rule constraint: torch's Adam constructor refuses a tensor ``lr`` or beta when ``foreach=True`` and
    ``capturable=False`` (its multi-tensor kernel reads them as numbers), with a ValueError naming the value
    (``betas[0] as a Tensor ...``). ``names``: the hyper-parameters it checks, in torch's order; a pair is
    checked item by item. (torch's SGD, Adagrad and RMSprop take a tensor lr with foreach: they do not
    declare it.)"""

    def check(values: Mapping[str, Any]) -> Exception | None:
        if not values.get("foreach") or values.get("capturable"):
            return None
        for name in names:
            value = values.get(name)
            items = enumerate(value) if isinstance(value, (tuple, list)) else [(None, value)]
            for index, item in items:
                if isinstance(item, torch.Tensor):
                    label = name if index is None else f"{name}[{index}]"
                    return ValueError(f"{label} as a Tensor is not supported for capturable=False and foreach=True")
        return None

    return check


FUSED_DEVICES = ("mps", "cuda", "xpu", "hpu", "cpu", "mtia", "privateuseone")
"""Where torch 2.13's ``fused=True`` steps (``torch.utils._foreach_utils._get_fused_kernels_supported_devices``,
copied, as :data:`CAPTURABLE_DEVICES`)."""


def fused_problem(group: Mapping[str, Any], param: torch.Tensor) -> Exception | None:
    """torch.optim's step-time check of ``fused=True`` (``_device_dtype_check_for_fused``): a parameter that
    is not a floating-point tensor (a complex one) or lives elsewhere than on :data:`FUSED_DEVICES` is
    refused with torch's RuntimeError and message. Where torch accepts it, ``fused`` changes nothing."""
    if group.get("fused") and (param.device.type not in FUSED_DEVICES or not torch.is_floating_point(param)):
        return RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported "
                            f"devices: {list(FUSED_DEVICES)} but {param.dtype} and {param.device.type}")
    return None


def capturable_problem(group: Mapping[str, Any], device: torch.device) -> Exception | None:
    """torch.optim's step-time check of ``capturable=True`` (unless ``fused``, whose kernels take any
    device): a parameter elsewhere than on :data:`CAPTURABLE_DEVICES` is refused with torch's
    AssertionError and message. Where torch accepts it, descentlab's step changes nothing."""
    if group.get("capturable") and not group.get("fused") and device.type not in CAPTURABLE_DEVICES:
        return AssertionError("If capturable=True, params and state_steps must be on supported devices: "
                              f"{list(CAPTURABLE_DEVICES)}.")
    return None
