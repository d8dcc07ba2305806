"""Per-parameter optimizer state with torch.optim's layout.

``state[p]`` holds ``step`` (a 0-dim float tensor on the CPU, float64 when the default dtype is
float64, as torch.optim keeps it) for rules that count steps, and one tensor per existing buffer,
shaped and typed like the parameter. Lazy buffers (``Buffer.init is None``) appear only after the
rule first sets them.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import torch

from .rule import Rule


def scalar_dtype() -> torch.dtype:
    """The dtype torch.optim uses for ``state['step']``."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def init_state(rule: Rule, param: torch.Tensor, group: Mapping[str, Any],
               state: MutableMapping[str, Any]) -> None:
    """Create whatever state ``param`` lacks: the step counter and every non-lazy buffer."""
    if rule.counts_steps and "step" not in state:
        state["step"] = torch.tensor(0.0, dtype=scalar_dtype())
    for buffer in rule.buffers:
        if buffer.init is not None and buffer.name not in state and buffer.exists(group):
            state[buffer.name] = buffer.init(param, group)


def needs_state(rule: Rule, group: Mapping[str, Any]) -> bool:
    """Whether a parameter of this group ever has state (torch's SGD without momentum has none)."""
    return rule.counts_steps or any(b.exists(group) for b in rule.buffers)


def check_loaded_state(rule: Rule, groups: list[dict[str, Any]], states: Mapping[torch.Tensor, Any],
                       owner: str) -> None:
    """After ``load_state_dict``: every buffer matches its parameter and no required one is
    missing, so a mismatched checkpoint fails here with a clear message, not mid-step. A lazy buffer
    (``Buffer.init is None``) may be None: torch's SGD up to 2.2 saved ``momentum_buffer=None`` (with or
    without momentum), and its step takes None as "not made yet"; so does descentlab's."""
    known = {b.name for b in rule.buffers} | ({"step"} if rule.counts_steps else set())
    for g_index, group in enumerate(groups):
        for p_index, param in enumerate(group["params"]):
            state = states.get(param)
            if not state:
                continue
            where = f"{owner}.load_state_dict: state of param {p_index} in group {g_index}"
            unknown = set(state) - known
            if unknown:
                raise ValueError(
                    f"{where} has keys {sorted(unknown)} that {owner} does not use "
                    f"(expected {sorted(known)}); was it saved by another optimizer?"
                )
            if rule.counts_steps and "step" not in state:
                raise ValueError(f"{where} lacks 'step'")
            for buffer in rule.buffers:
                if buffer.name not in state:
                    if buffer.init is not None and buffer.exists(group):
                        raise ValueError(f"{where} lacks {buffer.name!r} (the group's settings need it)")
                    continue
                value = state[buffer.name]
                if value is None and buffer.init is None:
                    continue
                if not isinstance(value, torch.Tensor) or value.shape != param.shape:
                    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                    raise ValueError(
                        f"{where}: {buffer.name!r} has shape {shape} but the parameter has shape "
                        f"{tuple(param.shape)}"
                    )
