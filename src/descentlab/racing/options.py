"""The race's options as the CLI and the Python API give them, parsed and checked: each bad value is a
ValueError naming the option and the value, raised before any work starts.

``--hp NAME=V1,V2,...`` gives a hyper-parameter's values to search (repeatable). A value is a number,
``true``/``false``, or — for a pair such as Adam's ``betas`` — two numbers joined by ``:``
(``--hp betas=0.9:0.999,0.8:0.99``). ``--batch-size 32,64,128`` searches batch sizes (``full``: the
whole training set).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from ..tasks.registry import MAX_SEED
from ..train.schedule import SCHEDULES

MAX_SEEDS = 10_000
"""The most seeds a race takes (each optimizer trains once per seed): a larger count is a typo."""


def schedules(value: Sequence[str] | str | None) -> tuple[str, ...]:
    if value is None:
        return ("constant",)
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(str(item).strip() for item in items if str(item).strip())
    if not names:
        raise ValueError(f"schedules: need at least one schedule ({', '.join(SCHEDULES)}), got {value!r}")
    for name in names:
        if name not in SCHEDULES:
            raise ValueError(f"schedules: unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"schedules: each schedule once please, got {list(names)}")
    return names


def names(value: Sequence[str] | str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(str(item).strip() for item in items if str(item).strip())
    if not out:
        raise ValueError(f"optimizers: need at least one optimizer name, got {value!r}")
    return out


def floats(option: str, value: Sequence[float] | str | float) -> tuple[float, ...]:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = [value]
    items = value.split(",") if isinstance(value, str) else list(value)
    out = []
    for item in items:
        if isinstance(item, str) and not item.strip():
            continue
        try:
            number = float(item)
        except (TypeError, ValueError):
            raise ValueError(f"{option}: {item!r} is not a number (got {value!r})") from None
        if not (math.isfinite(number) and number > 0):
            raise ValueError(f"{option}: every learning rate must be a positive number, got {item!r}")
        out.append(number)
    if not out:
        raise ValueError(f"{option}: the learning-rate grid is empty (got {value!r})")
    return tuple(sorted(set(out)))


def seeds(value: int | Sequence[int] | str) -> tuple[int, ...]:
    """An int N means seeds 0..N-1; a list (or "0,5,7") is taken as given."""
    if isinstance(value, str):
        text = value.strip()
        if "," not in text:
            try:
                value = int(text)
            except ValueError:
                raise ValueError(f"seeds: expected a count or a comma-separated list of ints, got {value!r}") from None
        else:
            value = [item for item in text.split(",") if item.strip()]
    if isinstance(value, bool):
        raise ValueError(f"seeds: expected a count or a list of ints, got {value!r}")
    if isinstance(value, int):
        if value < 1 or value > MAX_SEEDS:
            raise ValueError(f"seeds: a count must be in [1, {MAX_SEEDS}], got {value!r}")
        return tuple(range(value))
    if isinstance(value, numbers.Integral):
        return seeds(int(value))
    if not isinstance(value, (list, tuple, range)):
        raise ValueError(f"seeds: expected a count or a list of ints, got {value!r}")
    out = []
    for item in value:
        integral = isinstance(item, numbers.Integral) or (isinstance(item, str) and item.strip().lstrip("-").isdigit())
        if isinstance(item, bool) or not integral:
            raise ValueError(f"seeds: {item!r} is not an integer")
        seed = int(item)
        if not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seeds: each seed must be in [0, 2**64 - 1], got {seed}")
        out.append(seed)
    if len(out) > MAX_SEEDS:
        raise ValueError(f"seeds: at most {MAX_SEEDS} seeds, got {len(out)}")
    if not out or len(set(out)) != len(out):
        raise ValueError(f"seeds: need one or more distinct seeds, got {value!r}")
    return tuple(out)


def positive_int(option: str, value: Any) -> int:
    number: int | None = None
    if isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        number = int(value)
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    if number is None or number < 1:
        raise ValueError(f"{option} must be a positive integer, got {value!r}")
    return number


def batch_size(value: Any, option: str = "batch_size") -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() == "full"):
        return None
    return positive_int(option, value)


def batch_sizes(value: Any) -> tuple[int | None, ...]:
    """One batch size or several (``"32,64,128"``, a list); ``full``/None is the whole training set."""
    items = value.split(",") if isinstance(value, str) else (list(value) if isinstance(value, (list, tuple))
                                                              else [value])
    out: list[int | None] = []
    for item in items:
        if isinstance(item, str) and not item.strip():
            continue
        size = batch_size(item, "batch_size")
        if size in out:
            raise ValueError(f"batch_size: each batch size once please, got {value!r}")
        out.append(size)
    if not out:
        raise ValueError(f"batch_size: need at least one batch size, got {value!r}")
    return tuple(sorted(out, key=lambda s: math.inf if s is None else s))


def patience(value: Any, epochs: int) -> int | None:
    """Early stopping of tuning runs, in evaluations (one per epoch): ``None``/``"auto"`` is a quarter of the
    budget (at least 3), ``"none"``/``0`` trains every run its whole budget."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return max(3, math.ceil(epochs / 4))
    text = value.strip().lower() if isinstance(value, str) else value
    if text in ("none", "0") or (text == 0 and not isinstance(text, bool)):
        return None
    return positive_int("patience", value)


def hp_value(name: str, text: Any) -> Any:
    """One value of ``--hp``: a number, a bool, or a pair ``a:b``."""
    if not isinstance(text, str):
        if isinstance(text, (list, tuple)):
            return tuple(hp_value(name, item) for item in text)
        if isinstance(text, bool) or (isinstance(text, (int, float)) and math.isfinite(text)):
            return text
        raise ValueError(f"hp {name}: {text!r} is not a number, true/false or a pair a:b")
    item = text.strip()
    if ":" in item:
        return tuple(hp_value(name, part) for part in item.split(":"))
    if item.lower() in ("true", "false"):
        return item.lower() == "true"
    try:
        number = float(item)
    except ValueError:
        raise ValueError(f"hp {name}: {text!r} is not a number, true/false or a pair a:b") from None
    if not math.isfinite(number):
        raise ValueError(f"hp {name}: {text!r} is not a finite number")
    return number


def _values_of(name: Any, values: Any) -> list[Any]:
    """The values a mapping gives one name: a list is several values, a string is read as the CLI reads it
    (``"0,0.9"``), a tuple (``betas=(0.9, 0.999)``), a number or a bool is one value."""
    if isinstance(values, str):
        return values.split(",")
    if isinstance(values, list):
        return values
    if isinstance(values, (tuple, bool, int, float)):
        return [values]
    raise ValueError(f"hp {name}: expected a value or a list of values, got {values!r}")


def hp(value: Mapping[str, Any] | Sequence[str] | None) -> dict[str, tuple[Any, ...]]:
    """``{"weight_decay": (0.0, 0.1)}`` from ``["weight_decay=0,0.1", ...]`` (the CLI's ``--hp``) or a mapping
    name -> a list of values (``{"weight_decay": [0, 0.1], "betas": [(0.9, 0.999)]}``; a single value, a
    tuple pair included, is one value)."""
    if value is None:
        return {}
    pairs: list[tuple[str, Any]] = []
    if isinstance(value, Mapping):
        pairs = [(str(name), _values_of(name, values)) for name, values in value.items()]
    else:
        for item in [value] if isinstance(value, str) else value:
            text = str(item)
            name, sep, values = text.partition("=")
            if not sep or not name.strip() or not values.strip():
                raise ValueError(f"hp: expected NAME=V1,V2,... (e.g. weight_decay=0,0.01), got {text!r}")
            pairs.append((name.strip(), values.split(",")))
    out: dict[str, tuple[Any, ...]] = {}
    for name, values in pairs:
        if name == "lr":
            raise ValueError("hp lr: the learning rate has its own option (--lrs)")
        if name in out:
            raise ValueError(f"hp {name}: given twice; give every value in one NAME=V1,V2,...")
        parsed = tuple(hp_value(name, v) for v in values if not (isinstance(v, str) and not v.strip()))
        if not parsed:
            raise ValueError(f"hp {name}: no values given")
        if len(set(parsed)) != len(parsed):
            raise ValueError(f"hp {name}: each value once please, got {values!r}")
        out[name] = parsed
    return dict(sorted(out.items()))
