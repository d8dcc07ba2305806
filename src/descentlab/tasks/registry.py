"""Tasks: data (in-memory tensors) + model factories + loss, by name or from a user's own data.

``get_task("mnist1d")`` builds a built-in task; ``from_tensors(...)`` and ``custom_task(...)`` wrap a
user's tensors or ``torch.utils.data.Dataset`` pair, an ``nn.Module`` factory and a loss, so the same
training loop and race run on them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import datasets
from .models import DESCRIPTIONS, MODELS

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ModelFactory = Callable[..., nn.Module]

_BUILD_LOCK = threading.RLock()
MAX_SEED = 2**64 - 1
"""The largest seed torch's generators take."""
_OPEN_BLOCKS: list[list[torch.Tensor]] = []
"""One cell per open :func:`global_rng` block, oldest first, holding the RNG state it will put back."""


def half_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``½·mean((prediction − target)²)``: its Hessian for a linear model is ``XᵀX / n``."""
    return 0.5 * F.mse_loss(prediction, target)


@contextlib.contextmanager
def global_rng(seed: int) -> Iterator[None]:
    """Run the block with torch's global (CPU) RNG seeded to ``seed``, then put the caller's state back.

    The seeding and the restore hold a lock that :func:`seeded` holds throughout, so runs in
    several threads never disturb each other's model initialisation. Blocks of several threads may
    end in any order: the newest open block restores what it found; an older one that ends first
    leaves the (newer run's) state alone and hands what it found to the block opened after it, so
    the caller's state is back once all have ended."""
    with _BUILD_LOCK:
        cell = [torch.get_rng_state()]
        torch.manual_seed(seed)
        _OPEN_BLOCKS.append(cell)
    try:
        yield
    finally:
        with _BUILD_LOCK:
            index = next(i for i, open_cell in enumerate(_OPEN_BLOCKS) if open_cell is cell)
            del _OPEN_BLOCKS[index]
            if index == len(_OPEN_BLOCKS):
                torch.set_rng_state(cell[0])
            else:
                _OPEN_BLOCKS[index][0] = cell[0]


def set_global_rng_state(state: torch.Tensor) -> None:
    with _BUILD_LOCK:
        torch.set_rng_state(state)


def seeded(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Call ``factory()`` with torch's global RNG seeded to ``seed``, restoring the caller's RNG state
    afterwards (so initialisation is reproducible and the caller's own stream is untouched)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2**64 - 1], got {seed!r}")
    with _BUILD_LOCK:
        saved = torch.get_rng_state()
        torch.manual_seed(seed)
        try:
            module = factory()
        finally:
            torch.set_rng_state(saved)
    if not isinstance(module, nn.Module):
        raise TypeError(f"the model factory must return an nn.Module, got {type(module).__name__}")
    return module


@dataclass
class Task:
    """A training problem: train / val / test tensors, model factories and a loss.

    ``kind`` is ``"classification"`` (integer targets, accuracy reported) or ``"regression"``.
    ``models`` maps a model name to a factory taking keyword options; ``options`` are the arguments
    the task was built with (recorded in run configs); ``info`` holds facts such as the exact
    solution of ``lstsq``.
    """

    name: str
    kind: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    loss_fn: LossFn
    models: dict[str, ModelFactory]
    default_model: str
    options: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("classification", "regression"):
            raise ValueError(f"kind must be 'classification' or 'regression', got {self.kind!r}")
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if split == "test" and x is None and y is None:
                continue
            if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
                raise TypeError(f"x_{split} and y_{split} must be tensors, got {type(x).__name__} "
                                f"and {type(y).__name__}")
            if len(x) != len(y) or len(x) == 0:
                raise ValueError(f"x_{split} and y_{split} must have the same non-zero length, got {len(x)} "
                                 f"and {len(y)}")
        if self.default_model not in self.models:
            raise ValueError(f"default_model {self.default_model!r} is not one of {sorted(self.models)}")

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    @property
    def has_test(self) -> bool:
        return self.x_test is not None

    def fingerprint(self) -> str:
        """SHA-256 over every split's name, dtype, shape and bytes: tells two data sets apart where
        names and options cannot (a user's own data), e.g. for a run directory's identity."""
        sha = hashlib.sha256()
        for split in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
            tensor = getattr(self, split)
            if tensor is None:
                continue
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            sha.update(f"{split}:{flat.dtype}:{tuple(tensor.shape)}".encode())
            sha.update(flat.view(torch.uint8).numpy())
        return sha.hexdigest()

    def make_model(self, model_name: str | None = None, seed: int = 0, **options: Any) -> nn.Module:
        """A freshly initialised model (``seed`` fixes the initial weights), in the data's dtype."""
        name = self.default_model if model_name is None else model_name
        if name not in self.models:
            raise ValueError(f"unknown model {name!r} for task {self.name!r}; known: {', '.join(self.models)}")
        factory = self.models[name]
        module = seeded(lambda: factory(**options), seed)
        if self.x_train.is_floating_point():
            module = module.to(self.x_train.dtype)
        return module


# -- built-in tasks -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskSpec:
    name: str
    build: Callable[..., Task]
    kind: str
    models: tuple[str, ...]
    default_model: str
    description: str


def _from_arrays(name: str, kind: str, arrays: datasets.Arrays, input_shape: tuple[int, ...], n_outputs: int,
                 loss_fn: LossFn, models: Mapping[str, Mapping[str, Any]], default_model: str,
                 options: dict[str, Any]) -> Task:
    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    factories = {m: functools.partial(MODELS[m], input_shape, n_outputs, **dict(defaults))
                 for m, defaults in models.items()}
    return Task(name, kind, tensor(arrays.x_train), tensor(arrays.y_train), tensor(arrays.x_val),
                tensor(arrays.y_val), tensor(arrays.x_test), tensor(arrays.y_test), loss_fn, factories,
                default_model, options, arrays.info)


def _mnist1d_task(**options: Any) -> Task:
    arrays = datasets.mnist1d(**options)
    recorded = {k: v for k, v in options.items() if k != "cache_dir"}
    return _from_arrays("mnist1d", "classification", arrays, (arrays.x_train.shape[1],), 10, F.cross_entropy,
                        {"linear": {}, "mlp": {}, "cnn": {}}, "mlp", recorded)


def _digits_task(**options: Any) -> Task:
    arrays = datasets.digits(**options)
    return _from_arrays("digits", "classification", arrays, (8, 8), 10, F.cross_entropy,
                        {"linear": {}, "mlp": {}, "cnn": {}}, "mlp", dict(options))


def _lstsq_task(**options: Any) -> Task:
    arrays = datasets.lstsq(**options)
    return _from_arrays("lstsq", "regression", arrays, (arrays.x_train.shape[1],), 1, half_mse,
                        {"linear": {"bias": False}, "mlp": {}}, "linear", dict(options))


TASKS: dict[str, TaskSpec] = {
    spec.name: spec for spec in (
        TaskSpec("mnist1d", _mnist1d_task, "classification", ("linear", "mlp", "cnn"), "mlp",
                 "MNIST-1D: 1-D signals of length 40, 10 classes; 3200 train / 800 val / 1000 test, generated "
                 "offline and cached"),
        TaskSpec("digits", _digits_task, "classification", ("linear", "mlp", "cnn"), "mlp",
                 "scikit-learn 8x8 digits, 10 classes; 1078 train / 359 val / 360 test, standardised"),
        TaskSpec("lstsq", _lstsq_task, "regression", ("linear", "mlp"), "linear",
                 "least squares ½·mean((Xw−y)²), Hessian eigenvalues from 1 down to 1/condition (default 10); "
                 "GD diverges for lr > 2"),
    )
}


def task_names() -> list[str]:
    return list(TASKS)


def model_names() -> list[str]:
    return list(MODELS)


def model_description(name: str) -> str:
    return DESCRIPTIONS[name]


def get_task(name: str = "mnist1d", **options: Any) -> Task:
    """Build the built-in task ``name`` (``mnist1d``, ``digits``, ``lstsq``); ``options`` go to its
    data builder in :mod:`descentlab.tasks.datasets` (e.g. ``val_fraction``, ``split_seed``, ``cache_dir``)."""
    if not isinstance(name, str) or name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    try:
        return TASKS[name].build(**options)
    except TypeError as error:
        if "unexpected keyword argument" in str(error):
            raise TypeError(f"task {name!r}: {error}") from None
        raise


# -- a user's own task ------------------------------------------------------------------------------
def _infer_kind(y: torch.Tensor) -> str:
    return "regression" if y.is_floating_point() else "classification"


def _as_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")


def _factories(model: ModelFactory | Mapping[str, ModelFactory]) -> dict[str, ModelFactory]:
    if isinstance(model, Mapping):
        factories = dict(model)
    elif callable(model):
        factories = {"custom": model}
    else:
        raise TypeError(f"model must be a callable returning an nn.Module (or a dict of them), got {model!r}")
    if not factories or not all(callable(f) for f in factories.values()):
        raise TypeError(f"model must map names to callables returning an nn.Module, got {model!r}")
    return factories


def from_tensors(x_train: Any, y_train: Any, x_val: Any, y_val: Any, x_test: Any = None, y_test: Any = None, *,
                 model: ModelFactory | Mapping[str, ModelFactory], loss: LossFn | None = None,
                 kind: str | None = None, name: str = "custom") -> Task:
    """A task from your own tensors (or arrays).

    ``model`` is a zero-argument callable returning a fresh ``nn.Module`` (called with torch's RNG
    seeded, so initialisation follows the run's seed), or a dict ``{name: factory}``. ``kind`` is
    inferred from ``y_train`` (integer targets: classification) unless given; ``loss`` defaults to
    cross-entropy for classification and mean squared error for regression.
    Example::

        task = from_tensors(x, y, xv, yv, model=lambda: nn.Sequential(nn.Linear(5, 3)))
        result = descentlab.train.train(task, optimizer="adam", lr=1e-2, epochs=5)
    """
    tensors = {n: (_as_tensor(n, v) if v is not None else None) for n, v in
               dict(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test,
                    y_test=y_test).items()}
    if (tensors["x_test"] is None) != (tensors["y_test"] is None):
        raise ValueError("give both x_test and y_test, or neither")
    kind = kind or _infer_kind(tensors["y_train"])
    if loss is None:
        loss = F.cross_entropy if kind == "classification" else F.mse_loss
    if not callable(loss):
        raise TypeError(f"loss must be a callable (prediction, target) -> scalar tensor, got {loss!r}")
    factories = _factories(model)
    return Task(name, kind, loss_fn=loss, models=factories, default_model=next(iter(factories)),
                options={}, **tensors)


def stack_dataset(dataset: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``(x, y)`` items of a map-style ``Dataset`` stacked into two tensors (kept in memory)."""
    try:
        size = len(dataset)
    except TypeError:
        raise TypeError(f"{name} must be a map-style Dataset with __len__, got {type(dataset).__name__}") from None
    if size == 0:
        raise ValueError(f"{name} is empty")
    xs, ys = [], []
    for index in range(size):
        item = dataset[index]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"{name}[{index}] must be an (input, target) pair, got {type(item).__name__}")
        xs.append(torch.as_tensor(item[0]))
        ys.append(torch.as_tensor(item[1]))
    return torch.stack(xs), torch.stack(ys)


def custom_task(train: Any, val: Any, test: Any = None, *, model: ModelFactory | Mapping[str, ModelFactory],
                loss: LossFn | None = None, kind: str | None = None, name: str = "custom") -> Task:
    """A task from your own ``torch.utils.data.Dataset`` pair (or triple), whose items are
    ``(input, target)``; the items are stacked into in-memory tensors once. See :func:`from_tensors`."""
    x_train, y_train = stack_dataset(train, "train")
    x_val, y_val = stack_dataset(val, "val")
    x_test, y_test = stack_dataset(test, "test") if test is not None else (None, None)
    return from_tensors(x_train, y_train, x_val, y_val, x_test, y_test, model=model, loss=loss, kind=kind, name=name)
