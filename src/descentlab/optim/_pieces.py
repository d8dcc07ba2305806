"""The accelerators' shared layer: a group's update run on pieces of about one size, not once per tensor.

Nothing is kept between steps. Each step, the parameters a path takes (a gradient, dense, float32
or float64, every buffer of the group already there, and what the path's ``accept`` asks: the
``flat`` path only big tensors) are sorted into buckets of one (device, dtype, step count t); the
rest go to the core (:func:`~._eager.eager_step`). Each bucket is cut into pieces of about
``piece_numel`` elements:

* consecutive small tensors are concatenated into one piece (the parameters, the gradients and each
  state buffer alike), and the results are copied back into each tensor where it lives;
* a bigger contiguous tensor is cut into slices of its own flat view, updated in place.

A piece is then stepped by ``run_piece(param, grad, buffers, step)`` — the rule's own ``update``,
uncompiled (:func:`eager_piece`) or compiled (:mod:`._compiled`) — which writes its results into
``param`` and ``buffers``. An elementwise rule does the same arithmetic on an element whatever
tensor it sits in, so the numbers are the core's (tested bitwise for float32 and float64; half
precision stays on the core, whose bfloat16/float16 kernels round differently on long and short
tensors, as do complex tensors, which the core views as real pairs, and tensor subclasses such as
FSDP2's DTensor).

Parameter objects, their storages, ``.grad`` and ``state`` are never re-pointed: a step reads and
writes them in place exactly as the core does, so shared memory, bucket views and state resets are
the user's, as with torch.optim.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ._eager import advance_step, check_result
from ._state import init_state, needs_state
from .rule import Rule, buffer_names

PIECE_DTYPES = (torch.float32, torch.float64)

RunPiece = Callable[[torch.Tensor, torch.Tensor, list[torch.Tensor], Any], None]
"""``run_piece(param, grad, buffers, step)``: step one piece, writing into ``param`` and ``buffers``."""


@dataclass
class _Member:
    param: torch.Tensor
    grad: torch.Tensor
    buffers: list[torch.Tensor]

    @property
    def numel(self) -> int:
        return self.param.numel()

    @property
    def sliceable(self) -> bool:
        """Whether pieces may be cut from it in place: every tensor it writes is contiguous."""
        return self.param.is_contiguous() and all(b.is_contiguous() for b in self.buffers)


@dataclass
class _Piece:
    segments: list[tuple[_Member, int, int]] = field(default_factory=list)
    numel: int = 0

    def add(self, member: _Member, start: int, end: int) -> None:
        self.segments.append((member, start, end))
        self.numel += end - start


def take(rule: Rule, group: Mapping[str, Any], states: MutableMapping[torch.Tensor, Any],
         accept: Callable[[_Member], bool] = lambda member: True
         ) -> tuple[dict[tuple[Any, ...], list[_Member]], list[torch.Tensor]]:
    """Buckets of the parameters a piece can step and ``accept`` takes (their step counts advanced),
    and the parameters left to the core (not advanced: the core does that)."""
    names = buffer_names(rule, group)
    stateful = needs_state(rule, group)
    buckets: dict[tuple[Any, ...], list[_Member]] = {}
    leftover: list[torch.Tensor] = []
    aliased = _aliased(group["params"])
    for param in group["params"]:
        grad = param.grad
        if grad is None:
            continue
        if not _pieceable(param, grad) or id(param) in aliased:
            leftover.append(param)
            continue
        state = states[param] if stateful else {}
        init_state(rule, param, group, state)
        buffers = [state.get(name) for name in names]
        # a lazy buffer not made yet, or a foreign one, or a member the path does not take
        if not all(_matches(b, param) for b in buffers) or not accept(member := _Member(param, grad, buffers)):
            leftover.append(param)
            continue
        step = advance_step(rule, state)
        buckets.setdefault((param.device, param.dtype, step), []).append(member)
    return buckets, leftover


def _aliased(params: Sequence[torch.Tensor]) -> set[int]:
    """Ids of the parameters whose memory overlaps another parameter's or any gradient's (their own
    included), and of the owners of those gradients: the core steps them one after another, as torch
    does, so each sees the writes made before it."""
    spans: dict[int, list[tuple[int, int, int, bool]]] = {}
    for param in params:
        for tensor, is_param in ((param.data, True), (param.grad, False)):
            if tensor is None or type(tensor) is not torch.Tensor or tensor.layout != torch.strided \
                    or tensor.numel() == 0:
                continue
            start, end = _byte_span(tensor)
            spans.setdefault(tensor.untyped_storage().data_ptr(), []).append((start, end, id(param), is_param))
    aliased: set[int] = set()
    for entries in spans.values():
        entries.sort()
        active: list[tuple[int, int, int, bool]] = []
        for start, end, owner, is_param in entries:
            active = [entry for entry in active if entry[1] > start]
            for _, _, other, other_is_param in active:
                if is_param or other_is_param:
                    aliased.update((owner, other))
            active.append((start, end, owner, is_param))
    return aliased


def _byte_span(tensor: torch.Tensor) -> tuple[int, int]:
    """[first, last + 1) byte of ``tensor`` in its storage."""
    size = tensor.element_size()
    extent = sum((n - 1) * abs(st) for n, st in zip(tensor.shape, tensor.stride(), strict=True))
    start = tensor.storage_offset() * size
    return start, start + (extent + 1) * size


def _pieceable(param: torch.Tensor, grad: torch.Tensor) -> bool:
    """Plain dense float32/float64 tensors; tensor subclasses (FSDP2's DTensor) stay on the core."""
    return (type(param.data) is torch.Tensor and type(grad) is torch.Tensor and param.dtype in PIECE_DTYPES
            and param.layout == torch.strided and grad.layout == torch.strided and grad.dtype == param.dtype
            and grad.device == param.device and grad.shape == param.shape)


def _matches(buffer: Any, param: torch.Tensor) -> bool:
    return (isinstance(buffer, torch.Tensor) and buffer.dtype == param.dtype and buffer.device == param.device
            and buffer.shape == param.shape and buffer.layout == torch.strided)


def pieces(members: Sequence[_Member], piece_numel: int) -> list[_Piece]:
    """Cut a bucket into pieces of about ``piece_numel`` elements (module docstring)."""
    out: list[_Piece] = []
    batch = _Piece()
    for member in members:
        if member.numel >= piece_numel and member.sliceable:
            for start in range(0, member.numel, piece_numel):
                out.append(_Piece([(member, start, min(start + piece_numel, member.numel))],
                                  min(piece_numel, member.numel - start)))
            continue
        batch.add(member, 0, member.numel)
        if batch.numel >= piece_numel:
            out.append(batch)
            batch = _Piece()
    if batch.segments:
        out.append(batch)
    return out


def step_pieces(buckets: Mapping[tuple[Any, ...], list[_Member]], piece_numel: int, run_piece: RunPiece) -> None:
    """Step every piece of every bucket with ``run_piece`` and write back each tensor it did not
    update in place (a parameter and its buffers may differ: a contiguous parameter whose state was
    loaded from a channels_last checkpoint)."""
    for (_, _, step), members in buckets.items():
        count = len(members[0].buffers)
        for piece in pieces(members, piece_numel):
            targets = [[(m.param, a, b) for m, a, b in piece.segments],
                       *([(m.buffers[i], a, b) for m, a, b in piece.segments] for i in range(count))]
            gathered = [_gather(segments) for segments in targets]
            grad, _ = _gather([(m.grad, a, b) for m, a, b in piece.segments])
            run_piece(gathered[0][0], grad, [flat for flat, _ in gathered[1:]], step)
            for (flat, in_place), segments in zip(gathered, targets, strict=True):
                if not in_place:
                    _scatter(flat, segments)


def _gather(segments: list[tuple[torch.Tensor, int, int]]) -> tuple[torch.Tensor, bool]:
    """The segments as one 1-D tensor: a view of the tensor itself when there is one contiguous
    segment (True: writes land in place), otherwise a new concatenation (False)."""
    if len(segments) == 1:
        tensor, start, end = segments[0]
        if tensor.is_contiguous():
            return tensor.view(-1)[start:end], True
    return torch.cat([t.reshape(-1)[a:b] for t, a, b in segments]), False


def _scatter(flat: torch.Tensor, segments: list[tuple[torch.Tensor, int, int]]) -> None:
    offset = 0
    for tensor, start, end in segments:
        values = flat[offset:offset + end - start]
        if tensor.is_contiguous():
            tensor.view(-1)[start:end].copy_(values)
        else:  # whole tensors only (pieces never slice a non-contiguous one)
            tensor.copy_(values.view(tensor.shape))
        offset += end - start


def write_back(param: torch.Tensor, buffers: Sequence[torch.Tensor], names: Sequence[str],
               new_param: torch.Tensor, new_state: Mapping[str, torch.Tensor]) -> None:
    """Copy a rule's results into the piece's parameter and buffers (those it returned anew)."""
    if new_param is not param:
        param.copy_(new_param)
    for name, buffer in zip(names, buffers, strict=True):
        value = new_state.get(name)
        if value is not None and value is not buffer:
            buffer.copy_(value)


def eager_piece(rule: Rule, names: Sequence[str], hypers: Mapping[str, Any], maximize: bool) -> RunPiece:
    """Step a piece with the rule's update run by torch's eager kernels, checked as the core checks."""

    def run(param: torch.Tensor, grad: torch.Tensor, buffers: list[torch.Tensor], step: Any) -> None:
        if maximize:
            grad = -grad
        state = dict(zip(names, buffers, strict=True))
        new_param, new_state = rule.update(param, grad, state, step=step, **hypers)
        check_result(rule, param, new_param, new_state, state)
        write_back(param, buffers, names, new_param, new_state)

    return run
