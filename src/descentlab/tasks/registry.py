"""Tasks: data (in-memory tensors or Datasets) + model factories + loss, by name or from a user's own data.

``get_task("mnist1d")`` builds a built-in task; ``from_tensors(...)`` and ``custom_task(...)`` wrap a
user's tensors or ``torch.utils.data.Dataset`` pair (kept as Datasets, read batch by batch), an
``nn.Module`` factory and a loss, so the same training loop and race run on them.
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
from torch.utils.data import Dataset, default_collate

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
    """A training problem: train / val / test data, model factories and a loss.

    Each split is either two tensors held in memory (``x_train``, ``y_train``, ...) or a map-style
    ``torch.utils.data.Dataset`` of ``(input, target)`` items (``train_set``, ``val_set``,
    ``test_set``: read item by item, batches collated by ``torch.utils.data.default_collate``), so
    data that is not one tensor in memory runs through the same loop. ``kind`` is
    ``"classification"`` (integer targets, accuracy reported) or ``"regression"``. ``models`` maps a
    model name to a factory taking keyword options; ``options`` are the arguments the task was built
    with (recorded in run configs); ``info`` holds facts such as the exact solution of ``lstsq``.
    """

    name: str
    kind: str
    x_train: torch.Tensor | None
    y_train: torch.Tensor | None
    x_val: torch.Tensor | None
    y_val: torch.Tensor | None
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    loss_fn: LossFn
    models: dict[str, ModelFactory]
    default_model: str
    options: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    train_set: Dataset | None = None
    val_set: Dataset | None = None
    test_set: Dataset | None = None
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ("classification", "regression"):
            raise ValueError(f"kind must be 'classification' or 'regression', got {self.kind!r}")
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            dataset = getattr(self, f"{split}_set")
            if dataset is not None:
                if x is not None or y is not None:
                    raise ValueError(f"give {split}_set or x_{split}/y_{split}, not both")
                _check_dataset(f"{split}_set", dataset)
                continue
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
        return self.size("train")

    @property
    def has_test(self) -> bool:
        return self.x_test is not None or self.test_set is not None

    @property
    def in_memory(self) -> bool:
        """Whether the training split is two tensors (else a Dataset read item by item)."""
        return self.train_set is None

    def input_example(self) -> torch.Tensor:
        """The first training input, as a batch of one (for its dtype and shape)."""
        return self.x_train[:1] if self.in_memory else self.batch("train", torch.arange(1))[0]

    def size(self, split: str) -> int:
        dataset = getattr(self, f"{split}_set")
        return len(dataset) if dataset is not None else len(getattr(self, f"x_{split}"))

    def batch(self, split: str, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples ``index`` of ``split`` as ``(inputs, targets)`` (on the CPU for a Dataset)."""
        dataset = getattr(self, f"{split}_set")
        if dataset is None:
            return getattr(self, f"x_{split}")[index], getattr(self, f"y_{split}")[index]
        items = [dataset[i] for i in index.tolist()]
        x, y = default_collate(items)
        return torch.as_tensor(x), torch.as_tensor(y)

    def chunks(self, split: str, chunk: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The whole of ``split`` in order, ``chunk`` examples at a time."""
        n = self.size(split)
        for start in range(0, n, chunk):
            if getattr(self, f"{split}_set") is None:
                yield getattr(self, f"x_{split}")[start:start + chunk], getattr(self, f"y_{split}")[start:start + chunk]
            else:
                yield self.batch(split, torch.arange(start, min(start + chunk, n)))

    def fingerprint(self) -> str:
        """SHA-256 over every split's name, dtype, shape and bytes (a Dataset's: item by item, once per
        task object): tells two data sets apart where names and options cannot (a user's own data),
        e.g. for a run directory's identity."""
        if self._fingerprint is None:
            sha = hashlib.sha256()
            for split in ("train", "val", "test"):
                if split == "test" and not self.has_test:
                    continue
                for name, tensor in _split_tensors(self, split):
                    flat = tensor.detach().cpu().contiguous().reshape(-1)
                    sha.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
                    sha.update(flat.view(torch.uint8).numpy())
            self._fingerprint = sha.hexdigest()
        return self._fingerprint

    def make_model(self, model_name: str | None = None, seed: int = 0, **options: Any) -> nn.Module:
        """A freshly initialised model (``seed`` fixes the initial weights), in the data's dtype."""
        name = self.default_model if model_name is None else model_name
        if name not in self.models:
            raise ValueError(f"unknown model {name!r} for task {self.name!r}; known: {', '.join(self.models)}")
        factory = self.models[name]
        module = seeded(lambda: factory(**options), seed)
        sample = self.input_example()
        if sample.is_floating_point():
            module = module.to(sample.dtype)
        return module


def _check_dataset(name: str, dataset: Any) -> None:
    try:
        size = len(dataset)
    except TypeError:
        raise TypeError(f"{name} must be a map-style Dataset with __len__, got {type(dataset).__name__}") from None
    if size == 0:
        raise ValueError(f"{name} is empty")
    item = dataset[0]
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise TypeError(f"{name}[0] must be an (input, target) pair, got {type(item).__name__}")


def _split_tensors(task: Task, split: str) -> Iterator[tuple[str, torch.Tensor]]:
    dataset = getattr(task, f"{split}_set")
    if dataset is None:
        yield f"x_{split}", getattr(task, f"x_{split}")
        yield f"y_{split}", getattr(task, f"y_{split}")
        return
    for index in range(len(dataset)):
        x, y = dataset[index]
        yield f"x_{split}[{index}]", torch.as_tensor(x)
        yield f"y_{split}[{index}]", torch.as_tensor(y)


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


def custom_task(train: Dataset, val: Dataset, test: Dataset | None = None, *,
                model: ModelFactory | Mapping[str, ModelFactory], loss: LossFn | None = None,
                kind: str | None = None, name: str = "custom") -> Task:
    """A task from your own map-style ``torch.utils.data.Dataset`` pair (or triple) of ``(input,
    target)`` items. The data stays in the Datasets: the loop reads each batch item by item and
    collates it (``default_collate``), so it need not fit in memory as one tensor. ``kind`` is
    inferred from the first training target (an integer: classification); see :func:`from_tensors`
    for ``model`` and ``loss``."""
    _check_dataset("train", train)
    _check_dataset("val", val)
    if test is not None:
        _check_dataset("test", test)
    kind = kind or _infer_kind(torch.as_tensor(train[0][1]))
    if loss is None:
        loss = F.cross_entropy if kind == "classification" else F.mse_loss
    if not callable(loss):
        raise TypeError(f"loss must be a callable (prediction, target) -> scalar tensor, got {loss!r}")
    factories = _factories(model)
    return Task(name, kind, None, None, None, None, None, None, loss_fn=loss, models=factories,
                default_model=next(iter(factories)), options={}, train_set=train, val_set=val, test_set=test)
