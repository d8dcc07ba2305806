"""The fused kernel checked against the core before it is used: which numbers it promises.

Each element op of the generated code is spelled as torch's CPU kernel computes it. The square root
is the one op whose result depends on the torch build: x86 wheels compute ``Tensor.sqrt`` with MKL's
vector math (``vmsSqrt``/``vmdSqrt``, high-accuracy mode), whose results are up to 1 ulp from the
correctly rounded root (20 % of random float32 inputs on this machine, 1.4 % in float64); other builds
use the IEEE ``sqrt`` instruction. The kernel calls torch's own vector square root when torch's library
has it (:mod:`._fused`), else the IEEE one. Which of the two matches is checked, not assumed, on random
tensors of every length up to 40 (every vector tail) and 4099, for a few steps:

* against the core itself — equal in every bit: the kernel is ``bitwise`` the core, hence torch.optim;
* failing that, run with the IEEE square root against the core with ``sqrt`` computed as IEEE (a
  :class:`~torch.overrides.TorchFunctionMode`) — equal in every bit: the kernel is the core's arithmetic
  with an IEEE ``sqrt`` (``ieee-sqrt``); its distance from torch.optim is the distance of torch's root
  from the exact one, at most 1 ulp per root, which moves an Adam / RMSprop / Adagrad update by about
  1 ulp of itself (``m / (√s + ε)`` inherits the root's relative error, 2⁻²³ in float32).

Anything else (a kernel that differs from both) is refused with the reason, and the core runs.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from ._eager import apply_update
from .rule import Rule

CHECK_LENGTHS = (*range(1, 41), 67, 4099)
"""Every vector tail, and one tensor long enough that a rare rounding difference shows."""
CHECK_STEPS = 3
BITWISE, IEEE_SQRT = "bitwise", "ieee-sqrt"

RunKernel = Callable[[array], None]
"""Runs the kernel over a one-row table (:mod:`._codegen`'s layout)."""


class IEEESqrt(TorchFunctionMode):
    """``torch.sqrt`` / ``Tensor.sqrt`` / ``Tensor.sqrt_`` on CPU float tensors as the correctly rounded
    square root (NumPy's, the hardware instruction); every other function as it is."""

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (),
                           kwargs: Mapping[str, Any] | None = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in ("sqrt", "sqrt_") and args and isinstance(args[0], torch.Tensor) \
                and args[0].dtype in (torch.float32, torch.float64) and args[0].device.type == "cpu":
            source = args[0]
            with np.errstate(invalid="ignore"):  # sqrt of a negative is NaN, as torch's
                value = torch.from_numpy(np.asarray(np.sqrt(source.detach().contiguous().numpy())))
            if name == "sqrt_":
                return source.copy_(value)
            return value
        return func(*args, **(kwargs or {}))


ROOT_CHUNK = 1 << 20
_ROOT_PROBLEMS: dict[str, str | None] = {}


def _root_inputs() -> Iterator[np.ndarray]:
    """The float32 inputs of the root check, a chunk at a time: every float32 in [1, 4) (a root's bits
    repeat with each factor of 4 where nothing under- or overflows: the same mantissa and exponent
    parity), 2^20 consecutive floats on each side of the emulation's range ends (2^-96 and 2^126) and of
    the smallest normal, 2^20 random bit patterns (every exponent, sign, subnormal, infinity, NaN), and
    the special values."""
    one, four = 0x3F800000, 0x40800000
    for start in range(one, four, ROOT_CHUNK):
        yield np.arange(start, start + ROOT_CHUNK, dtype=np.uint32).view(np.float32)
    for edge in (0x0F800000, 0x7E800000, 0x00800000):
        yield np.arange(edge - ROOT_CHUNK // 2, edge + ROOT_CHUNK // 2, dtype=np.uint32).view(np.float32)
    yield np.random.default_rng(1234).integers(0, 1 << 32, ROOT_CHUNK, dtype=np.uint32).view(np.float32)
    yield np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -1.0, 1e-45, 1.1754942e-38, 1.1754944e-38,
                    3.4028235e38, 2.0 ** -96, 2.0 ** 126, 1.0, 4.0], dtype=np.float32)


def root_problem(name: str, root: Callable[[np.ndarray], np.ndarray]) -> str | None:
    """None when ``root`` (float32 array -> its square roots) gives torch.sqrt's bits (NaN for NaN) on
    every input of :func:`_root_inputs`, else the first input where it does not. Once per ``name`` per
    process (about 0.1 s): the candidates are the IEEE root and the fused kernels' emulation of MKL's,
    whose code is the same in every kernel."""
    if name not in _ROOT_PROBLEMS:
        problem = None
        for values in _root_inputs():
            ours, theirs = root(values), torch.sqrt(torch.from_numpy(values)).numpy()
            differ = (ours.view(np.uint32) != theirs.view(np.uint32)) & ~(np.isnan(ours) & np.isnan(theirs))
            if differ.any():
                x = values[np.flatnonzero(differ)[0]]
                problem = (f"the {name} square root differs from torch.sqrt at {float(x)!r} "
                           f"({float(root(np.array([x]))[0])!r} against {float(torch.sqrt(torch.tensor(x)))!r})")
                break
        _ROOT_PROBLEMS[name] = problem
    return _ROOT_PROBLEMS[name]


def check(run: RunKernel, rule: Rule, names: Sequence[str], hypers: Mapping[str, Any], maximize: bool,
          dtype: torch.dtype, against: str) -> str | None:
    """None when the kernel (``run``) computes what the core computes — itself (``against`` =
    :data:`BITWISE`) or with an IEEE square root (:data:`IEEE_SQRT`) — in every bit; else what differed."""
    generator = torch.Generator().manual_seed(1234)
    for length in CHECK_LENGTHS:
        def draw(positive: bool = False, length: int = length) -> torch.Tensor:
            values = torch.randn(length, generator=generator, dtype=torch.float64)
            return (values.abs() + 0.01 if positive else values).to(dtype)

        param, grad, buffers = draw(), draw(), [draw(positive=True) for _ in names]
        ours = [param.clone(), grad, *(b.clone() for b in buffers)]
        step_count = torch.tensor(0.0)
        reference, state = param.clone(), {n: b.clone() for n, b in zip(names, buffers, strict=True)}
        meta = array("q", [length, step_count.data_ptr() if rule.counts_steps else 0, 1 if rule.counts_steps else 0,
                           0, *(t.data_ptr() for t in ours)])
        for step in range(1, CHECK_STEPS + 1):
            grad.copy_(draw())
            with IEEESqrt() if against == IEEE_SQRT else _nothing():
                apply_update(rule, reference, -grad if maximize else grad, state, names, hypers,
                             float(step) if rule.counts_steps else None)
            run(meta)
        expected = [reference, *(state[name] for name in names)]
        for label, a, b in zip(["param", *names], [ours[0], *ours[2:]], expected, strict=True):
            if not _same(a, b):
                return (f"the fused kernel differs from the core{' with IEEE sqrt' if against == IEEE_SQRT else ''} "
                        f"on {label} ({length} elements, {str(dtype).removeprefix('torch.')})")
    return None


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
