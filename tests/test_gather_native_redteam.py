"""Red-team cases for the fused path's table readers (optim/_gather_native.py and the Python reading in
optim/_fused.py): a user's unusual tensors, states and call patterns, each compared bitwise with
torch.optim (or, for a user rule, with its own eager core)."""

from __future__ import annotations

import collections
import copy
import gc
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch

import descentlab.optim as dl
from descentlab.examples.lion import Lion

CASES = [("Adam", {"lr": 0.1}), ("Adam", {"lr": 0.1, "amsgrad": True, "maximize": True, "weight_decay": 0.1}),
         ("AdamW", {"lr": 0.1, "amsgrad": True}), ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
         ("Adagrad", {"lr": 0.1}), ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5})]
IDS = ["adam", "adam-amsgrad-max-wd", "adamw-amsgrad", "sgd-nesterov", "adagrad", "rmsprop-centered"]


def _bits(tensor: Any) -> torch.Tensor:
    """A tensor's bits (NaN payloads included: torch.equal says NaN != NaN)."""
    tensor = torch.as_tensor(tensor).detach()
    return torch.zeros(tensor.numel(), dtype=tensor.dtype).copy_(tensor.reshape(-1)).view(torch.uint8)


def _same(opt: torch.optim.Optimizer, ours: list[torch.Tensor], ref: torch.optim.Optimizer,
          theirs: list[torch.Tensor]) -> None:
    for index, (p, q) in enumerate(zip(ours, theirs, strict=True)):
        assert torch.equal(_bits(p), _bits(q)), (index, dl.last_routes(opt))
        assert set(opt.state[p]) == set(ref.state[q])
        for key, value in ref.state[q].items():
            assert torch.equal(_bits(opt.state[p][key]), _bits(value)), (index, key, dl.last_routes(opt))


def _twin(setup: Callable[[], list[torch.Tensor]], cls: str, kwargs: dict[str, Any],
          mutate: Callable[[int, Any, list[torch.Tensor]], None] | None = None, steps: int = 4) -> list[dl.Route]:
    """Run descentlab's and torch's ``cls`` side by side on twin parameters; assert every bit equal."""
    torch.manual_seed(1)
    ours = setup()
    torch.manual_seed(1)
    theirs = setup()
    opt, ref = getattr(dl, cls)(ours, **kwargs), getattr(torch.optim, cls)(theirs, **kwargs)
    gen = torch.Generator().manual_seed(3)
    for t in range(steps):
        grads = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in ours]
        for p, q, g in zip(ours, theirs, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        if mutate is not None:
            mutate(t, opt, ours)
            mutate(t, ref, theirs)
        opt.step()
        ref.step()
        _same(opt, ours, ref, theirs)
    return dl.last_routes(opt)


def _simple() -> list[torch.Tensor]:
    return [torch.nn.Parameter(torch.randn(s)) for s in ((3, 4), (12,), (2,))]


# ---- bugs: tensors whose memory is not what their values are ----

def _neg_bit(values: torch.Tensor) -> torch.Tensor:
    """The same values as a tensor with the negative bit set (public API: the imaginary part of a
    conjugate): its memory holds minus its values, which ops resolve and raw memory does not."""
    z = torch.complex(torch.zeros_like(values), -values)
    neg = z.conj().imag
    assert neg.is_neg() and torch.equal(neg, values)
    return neg


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=IDS)
def test_a_gradient_with_the_negative_bit_gets_torchs_numbers(cls: str, kwargs: dict[str, Any]) -> None:
    """A one-element gradient that is ``z.conj().imag`` (contiguous, strided, float32, negative bit set)."""
    def one() -> list[torch.Tensor]:
        return [torch.nn.Parameter(torch.randn(1)), torch.nn.Parameter(torch.randn(1))]

    def neg_grad(t: int, opt: Any, params: list[torch.Tensor]) -> None:
        params[0].grad = _neg_bit(params[0].grad)

    _twin(one, cls, kwargs, neg_grad)


def test_a_parameter_with_the_negative_bit_gets_torchs_numbers() -> None:
    """``p.data = z.conj().imag``: torch's in-place update writes through the negative bit."""
    def one() -> list[torch.Tensor]:
        p = torch.nn.Parameter(torch.zeros(1))
        p.data = _neg_bit(torch.tensor([0.75]))
        return [p, torch.nn.Parameter(torch.randn(3))]

    _twin(one, "SGD", {"lr": 0.5})


def test_a_step_count_with_the_negative_bit_gets_torchs_numbers() -> None:
    """``state['step']`` a 0-d float32 tensor with the negative bit (as load_state_dict can leave any tensor)."""
    def neg_step(t: int, opt: Any, params: list[torch.Tensor]) -> None:
        if t == 1:
            for p in params:
                opt.state[p]["step"] = _neg_bit(opt.state[p]["step"].reshape(1)).reshape(())

    _twin(_simple, "Adam", {"lr": 0.1}, neg_step)


def test_a_zero_tensor_gradient_does_not_crash_the_process() -> None:
    """An efficient zero tensor (``_is_zerotensor``: no memory, data_ptr 0) as a gradient: torch.optim
    steps with zeros; the fused kernel must not read address 0 (it segfaulted)."""
    code = (
        "import torch, descentlab.optim as dl\n"
        "out = []\n"
        "for mod in (dl, torch.optim):\n"
        "    p = torch.nn.Parameter(torch.ones(3)); opt = mod.Adam([p], lr=0.1)\n"
        "    p.grad = torch.ones(3); opt.step()\n"
        "    p.grad = torch._efficientzerotensor(3); opt.step()\n"
        "    out.append((p.detach().clone(), opt.state[p]['exp_avg'].clone()))\n"
        "assert all(torch.equal(a, b) for a, b in zip(*out)), out\n"
        "print('same')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0 and "same" in done.stdout, (done.returncode, done.stderr[-800:])


# ---- bug: in-place updates that autograd does not see ----

@pytest.mark.parametrize(("cls", "kwargs"), CASES[:1] + CASES[3:4], ids=IDS[:1] + IDS[3:4])
def test_a_step_bumps_the_version_counter_as_torch_does(cls: str, kwargs: dict[str, Any]) -> None:
    """A graph that saved a parameter, then a step, then its backward: torch.optim's in-place update
    bumps the parameter's version, so backward raises instead of using the stepped values (silently
    wrong gradients on the fused path, which wrote the memory without telling autograd)."""
    outcomes = []
    for module in (dl, torch.optim):
        p = torch.nn.Parameter(torch.randn(4, generator=torch.Generator().manual_seed(0)))
        opt = getattr(module, cls)([p], **kwargs)
        p.grad = torch.ones(4)
        opt.step()  # state made: the next step is the kernel's
        loss = (p * p).sum()  # saves p for backward
        before = p._version
        opt.step()
        outcomes.append(p._version > before)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()
    assert outcomes == [True, True]


# ---- what held ----

@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=IDS)
def test_parameters_that_are_overlapping_views_of_one_storage(cls: str, kwargs: dict[str, Any]) -> None:
    def views() -> list[torch.Tensor]:
        base = torch.randn(12)
        return [base[0:6].requires_grad_(), base[4:10].requires_grad_(), base.view(3, 4).requires_grad_(),
                torch.randn(3).requires_grad_()]

    routes = _twin(views, cls, kwargs)
    assert routes[0].path == "fused" and "on the core" in routes[0].reason, routes


@pytest.mark.parametrize(("cls", "kwargs"), CASES[:1] + CASES[4:], ids=IDS[:1] + IDS[4:])
def test_a_buffer_that_is_another_parameters_memory_or_gradient(cls: str, kwargs: dict[str, Any]) -> None:
    def alias(t: int, opt: Any, params: list[torch.Tensor]) -> None:
        if t in (1, 2):
            names = [k for k in opt.state[params[0]] if k != "step"]
            target = params[1].detach() if t == 1 else params[1].grad
            opt.state[params[0]][names[0]] = target.abs_().view(3, 4)  # >= 0: a valid sum of squares

    _twin(_simple, cls, kwargs, alias)


@pytest.mark.parametrize("how", ["expanded", "requires_grad", "other_params_view"])
def test_unusual_gradients(how: str) -> None:
    def grads(t: int, opt: Any, params: list[torch.Tensor]) -> None:
        if how == "expanded":
            params[0].grad = params[0].grad[:1].expand(3, 4)
            params[2].grad = params[2].grad[:1].expand(2)
        elif how == "requires_grad":
            for p in params:
                p.grad.requires_grad_()
        else:
            params[2].grad = params[1].detach()[:2]

    for cls, kwargs in CASES[1:2] + CASES[3:4]:
        _twin(_simple, cls, kwargs, grads)


@pytest.mark.parametrize("how", ["ordered", "plain", "getitem", "missing", "defaultdict", "string_key"])
def test_the_state_mapping_replaced(how: str) -> None:
    class Logged(dict):
        def __getitem__(self, key: Any) -> Any:
            return super().__getitem__(key)

    class Missing(dict):
        def __missing__(self, key: Any) -> Any:
            value = self[key] = {}
            return value

    def replace(t: int, opt: Any, params: list[torch.Tensor]) -> None:
        if t == 1 and how == "string_key":
            opt.state["note"] = {"x": 1}
        elif t == 1:
            opt.state = {"ordered": collections.OrderedDict, "plain": dict, "getitem": Logged, "missing": Missing,
                         "defaultdict": lambda d: collections.defaultdict(dict, d)}[how](opt.state)

    _twin(_simple, "Adam", {"lr": 0.1, "amsgrad": True}, replace)


@pytest.mark.parametrize("how", ["int", "one_element_1d", "requires_grad", "float64", "shared", "meta"])
def test_unusual_step_counts(how: str) -> None:
    def steps(t: int, opt: Any, params: list[torch.Tensor]) -> None:
        if t != 1:
            return
        shared = opt.state[params[0]]["step"]
        for p in params:
            step = opt.state[p]["step"]
            opt.state[p]["step"] = {"int": lambda s: torch.tensor(int(s)), "one_element_1d": lambda s: s.reshape(1),
                                    "requires_grad": lambda s: s.clone().requires_grad_(),
                                    "float64": lambda s: s.double(), "shared": lambda s: shared,
                                    "meta": lambda s: s}[how](step)

    _twin(_simple, "Adam", {"lr": 0.1}, steps)


def test_parameters_swapped_replaced_and_of_several_dtypes() -> None:
    def params() -> list[torch.Tensor]:
        return [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(12, dtype=torch.float64)),
                torch.nn.Parameter(torch.randn(0)), torch.nn.Parameter(torch.randn(2)),
                torch.nn.Parameter(torch.randn(0, 4, dtype=torch.float64))]

    def change(t: int, opt: Any, ps: list[torch.Tensor]) -> None:
        gen = torch.Generator().manual_seed(10 + t)
        if t == 1:  # new storage of another shape, state reset
            ps[3].data = torch.randn(7, generator=gen)
            ps[3].grad = torch.randn(7, generator=gen)
            opt.state.pop(ps[3], None)
        if t == 2:  # the parameter object replaced in the group
            new = torch.nn.Parameter(ps[0].detach().clone() + 1)
            new.grad = ps[0].grad
            opt.state[new] = opt.state.pop(ps[0])
            opt.param_groups[0]["params"][0] = new
            ps[0] = new
        if t == 3:
            opt.zero_grad(set_to_none=False)

    for cls, kwargs in CASES:
        _twin(params, cls, kwargs, change, steps=5)


@pytest.mark.parametrize(("cls", "kwargs"), CASES[3:4] + CASES[:1], ids=IDS[3:4] + IDS[:1])
def test_a_gradient_that_is_the_parameter_itself(cls: str, kwargs: dict[str, Any]) -> None:
    """``p.grad = p.detach()`` (the gradient is the parameter's memory). torch.optim.SGD clones the first
    momentum buffer before updating the parameter; the core writes the parameter back first and then
    clones the buffer from the gradient, which by then holds the updated parameter (the fused kernel
    rejects the row, so the core's numbers are what the user gets)."""
    def itself(t: int, opt: Any, params: list[torch.Tensor]) -> None:
        params[2].grad = params[2].detach()

    _twin(_simple, cls, kwargs, itself)


def test_an_empty_param_group_is_accepted_as_torch_accepts_it() -> None:
    """torch.optim takes ``[{"params": []}, {"params": [...]}]`` (and steps the other group); descentlab
    raised ValueError("param group 0 has an empty 'params' list")."""
    ours = _simple()
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    ref = torch.optim.RMSprop([{"params": []}, {"params": theirs}], lr=0.01)
    opt = dl.RMSprop([{"params": []}, {"params": ours}], lr=0.01)
    for p, q in zip(ours, theirs, strict=True):
        p.grad = torch.ones(p.shape)
        q.grad = torch.ones(q.shape)
    opt.step()
    ref.step()
    _same(opt, ours, ref, theirs)


def test_grad_modes_around_the_step() -> None:
    for context in (torch.inference_mode, torch.no_grad, torch.enable_grad):
        ours = _simple()
        theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
        opt = dl.RMSprop(ours, lr=0.01, centered=True)
        ref = torch.optim.RMSprop(theirs, lr=0.01, centered=True)
        gen = torch.Generator().manual_seed(1)
        for _ in range(3):
            for p, q in zip(ours, theirs, strict=True):
                p.grad = torch.randn(p.shape, generator=gen)
                q.grad = p.grad.clone()
            with context():
                opt.step()
                ref.step()
        _same(opt, ours, ref, theirs)


def test_load_state_dict_mid_run_and_hooks() -> None:
    ours = _simple()
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt = dl.AdamW(ours, lr=0.01, amsgrad=True, weight_decay=0.1)
    ref = torch.optim.AdamW(theirs, lr=0.01, amsgrad=True, weight_decay=0.1)
    seen: list[str] = []
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append("pre"))
    opt.register_state_dict_pre_hook(lambda o: seen.append("state_dict"))
    gen = torch.Generator().manual_seed(1)
    for t in range(5):
        for p, q in zip(ours, theirs, strict=True):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        if t == 2:
            saved = copy.deepcopy(ref.state_dict())
            opt.load_state_dict(copy.deepcopy(saved))
            ref.load_state_dict(saved)
        opt.step()
        ref.step()
    _same(opt, ours, ref, theirs)
    assert seen.count("pre") == 5
    assert dl.last_routes(opt)[0].path == "fused"


def test_two_optimizers_stepping_in_two_threads() -> None:
    results: dict[int, bool] = {}

    def worker(seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        ours = [torch.nn.Parameter(torch.randn(7, 3, generator=gen)) for _ in range(5)]
        theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
        opt, ref = dl.Adam(ours, lr=0.01, amsgrad=True), torch.optim.Adam(theirs, lr=0.01, amsgrad=True)
        for _ in range(100):
            for p, q in zip(ours, theirs, strict=True):
                p.grad = torch.randn(p.shape, generator=gen)
                q.grad = p.grad.clone()
            opt.step()
            ref.step()
        results[seed] = all(torch.equal(p, q) for p, q in zip(ours, theirs, strict=True))

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {0: True, 1: True}


def test_lion_fused_equals_its_eager_core() -> None:
    gen = torch.Generator().manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(7, 3, generator=gen)) for _ in range(4)]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt, twin = Lion(ours, lr=0.01, weight_decay=0.1), Lion(theirs, lr=0.01, weight_decay=0.1)
    dl.set_engine(twin, "eager")
    for _ in range(5):
        for p, q in zip(ours, theirs, strict=True):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        opt.step()
        twin.step()
    assert dl.last_routes(opt)[0].path == "fused"
    _same(opt, ours, twin, theirs)


@pytest.mark.parametrize("taken", [True, False])
def test_no_reference_or_memory_growth_over_2000_steps(taken: bool) -> None:
    """Taken by the reader, and not taken (a strided buffer last in the group: the reader reads every row
    before giving up)."""
    params = [torch.nn.Parameter(torch.randn(5, 3)) for _ in range(6)]
    opt = dl.Adam(params, lr=1e-3, amsgrad=True)
    for p in params:
        p.grad = torch.randn(p.shape)
    opt.step()
    if not taken:
        state = opt.state[params[-1]]
        wide = torch.zeros(5, 6)
        wide[:, ::2] = state["exp_avg"]
        state["exp_avg"] = wide[:, ::2]

    def counts() -> list[int]:
        tensors = [*params, *(p.grad for p in params), *(v for p in params for v in opt.state[p].values())]
        return [sys.getrefcount(t) for t in tensors]

    gc.collect()
    before, objects = counts(), len(gc.get_objects())
    for _ in range(2000):
        opt.step()
    gc.collect()
    assert counts() == before
    assert len(gc.get_objects()) <= objects + 50


@pytest.mark.parametrize("name", ["off", "no_compiler"])
def test_the_native_switch_and_a_process_without_a_compiler_give_torchs_bits(name: str) -> None:
    """DESCENTLAB_NATIVE_GATHER=0, and a process where nothing can be built (CXX missing, an empty
    extension cache): the same bits as torch.optim; the route names the kernel's build failure only."""
    code = (
        "import torch, descentlab.optim as dl\n"
        "from descentlab.optim import _gather_native\n"
        "g = torch.Generator().manual_seed(0)\n"
        "ours = [torch.nn.Parameter(torch.randn(4, 3, generator=g)) for _ in range(3)]\n"
        "theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]\n"
        "a, b = dl.Adam(ours, lr=0.1, amsgrad=True), torch.optim.Adam(theirs, lr=0.1, amsgrad=True)\n"
        "for _ in range(3):\n"
        "    for p, q in zip(ours, theirs): p.grad = torch.randn(p.shape, generator=g); q.grad = p.grad.clone()\n"
        "    a.step(); b.step()\n"
        "assert all(torch.equal(p, q) for p, q in zip(ours, theirs))\n"
        "print('READER', _gather_native.reader() is not None)\n"
        "print('ROUTE', dl.last_routes(a)[0])\n")
    with tempfile.TemporaryDirectory() as empty:
        runs = {
            "off": {"DESCENTLAB_NATIVE_GATHER": "0"},
            "no_compiler": {"CXX": os.path.join(empty, "no-such-c++"), "TORCH_EXTENSIONS_DIR": empty},
        }
        env = {**os.environ, **runs[name], "PYTHONPATH": os.pathsep.join(sys.path)}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, (name, done.stderr[-800:])
    assert "READER False" in done.stdout, (name, done.stdout)
    route = done.stdout.split("ROUTE", 1)[1]
    if name == "off":
        assert "path='fused'" in route and "fail" not in route, route
    else:
        assert "building the fused kernel failed" in route and "table reader" not in route, route
