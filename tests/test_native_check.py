"""The C++ parameter check (optim/_native.py): same answers as the Python check, used by the compiled
engine, loaded at once from the cache, and a failed build leaves the Python check with one warning."""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable

import pytest
import torch

import descentlab.optim as dl
from descentlab.optim import _flat, _native
from descentlab.optim._flat import set_engine

SMALL, BIG = 70, 2
"""Parameters of 10 elements (staged gradients) and of 60 (own gradients, with OWN_GRAD_NUMEL = 50)."""


@pytest.fixture(scope="module")
def native() -> types.ModuleType:
    module = _native.wait()
    assert module is not None, f"the C++ check did not build: {_native._State.error}"
    return module


def _bound_bucket(monkeypatch: pytest.MonkeyPatch) -> tuple[list[torch.nn.Parameter], _flat._Bucket]:
    monkeypatch.setattr(_flat, "OWN_GRAD_NUMEL", 50)
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(10, generator=gen)) for _ in range(SMALL)]
    params += [torch.nn.Parameter(torch.randn(60, generator=gen)) for _ in range(BIG)]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    opt = dl.SGD(params, lr=0.1, momentum=0.9)
    set_engine(opt, "flat")
    opt.step()
    opt.step()
    bucket = next(iter(_flat._engine(opt).plans.values())).buckets[0]
    assert bucket.staged == SMALL
    return params, bucket


def _fresh(p: torch.nn.Parameter) -> None:
    p.grad = p.grad.clone()


def _set_data(p: torch.nn.Parameter) -> None:
    p.data = p.data.clone()


CHANGES: dict[str, tuple[Callable[[list[torch.nn.Parameter]], None], bool]] = {
    "as bound": (lambda ps: None, True),
    "staged grad None": (lambda ps: setattr(ps[3], "grad", None), False),
    "staged grad fresh": (lambda ps: _fresh(ps[SMALL - 1]), False),
    "staged grad another view": (lambda ps: setattr(ps[0], "grad", ps[1].grad), False),
    "staged param data replaced": (lambda ps: _set_data(ps[5]), False),
    "staged param reshaped in place": (lambda ps: setattr(ps[5], "data", ps[5].data.view(2, 5)), True),
    "own grad None": (lambda ps: setattr(ps[SMALL], "grad", None), False),
    "own grad fresh": (lambda ps: _fresh(ps[SMALL + 1]), True),
    "own param data replaced": (lambda ps: _set_data(ps[SMALL + 1]), False),
}


@pytest.mark.parametrize("change", CHANGES)
def test_native_check_answers_as_the_python_check(change: str, native: types.ModuleType,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    params, bucket = _bound_bucket(monkeypatch)
    mutate, expected = CHANGES[change]
    mutate(params)
    calls = []
    spy = types.SimpleNamespace(bound=lambda *a: calls.append(1) or native.bound(*a),
                                impl_addresses=native.impl_addresses)
    monkeypatch.setattr(_native._State, "module", spy)
    assert bucket.bound_as_before(native=False) is expected
    assert bucket.bound_as_before(native=True) is expected
    assert calls == [1]


def test_native_check_follows_a_rebinding(native: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a replaced ``p.data`` is re-bound into its slice, the check's expected pointers are remade."""
    params, bucket = _bound_bucket(monkeypatch)
    _set_data(params[7])
    assert not bucket.bound_as_before(native=True)
    assert bucket.ready({}, dl.SGD.rule, (), stateful=False)  # re-binds the parameter into its slice
    assert bucket.bound_as_before(native=True)


def test_compiled_engine_uses_the_native_check_and_still_catches_changes(
        native: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    spy = types.SimpleNamespace(bound=lambda *a: calls.append(1) or native.bound(*a),
                                impl_addresses=native.impl_addresses)
    monkeypatch.setattr(_native._State, "module", spy)
    gen = torch.Generator().manual_seed(1)
    start = [torch.randn(12, generator=gen) for _ in range(_native.NATIVE_CHECK_PARAMS + 6)]
    runs = []
    for mode in ("compiled", "eager"):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = dl.SGD(params, lr=0.05, momentum=0.9, nesterov=True)
        set_engine(opt, mode)
        runs.append((params, opt))
    for step in range(7):
        grads = [torch.randn(12, generator=gen) for _ in start]
        for params, opt in runs:
            opt.zero_grad(set_to_none=step == 3)  # step 3: every gradient a fresh tensor
            for p, g in zip(params, grads, strict=True):
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.copy_(g)
            if step == 5:
                params[9].data = params[9].data.clone()  # leaves its slice: must be re-bound
            opt.step()
        for fast, ref in zip(*(params for params, _ in runs), strict=True):
            torch.testing.assert_close(fast, ref, atol=1e-6, rtol=1e-6, msg=f"step {step}")
    assert len(calls) >= 3, "the compiled engine did not use the C++ check"


def test_a_cached_library_loads_at_once(native: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _native.library_path().exists()
    for name, value in (("module", None), ("thread", None), ("error", None), ("settled", False)):
        monkeypatch.setattr(_native._State, name, value)
    loaded = _native.checker()  # first call in a "new process": no build, no waiting
    assert loaded is not None and loaded.bound is not None


def test_a_failed_build_leaves_the_python_check_with_one_warning(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESCENTLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(_native, "COMPILER", str(tmp_path / "no-such-compiler"))
    for name, value in (("module", None), ("thread", None), ("error", None), ("settled", False)):
        monkeypatch.setattr(_native._State, name, value)
    with pytest.warns(RuntimeWarning, match="C\\+\\+ parameter check could not be built"):
        assert _native.wait() is None
    assert "no-such-compiler" in str(_native._State.error)
    assert not list((tmp_path / "native").glob("*")), "a failed build left a file behind"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _native.checker() is None  # said once
        params, bucket = _bound_bucket(monkeypatch)
        assert bucket.bound_as_before(native=True)
        params[2].grad = None
        assert not bucket.bound_as_before(native=True)
