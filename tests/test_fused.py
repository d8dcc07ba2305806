"""The fused path (optim/_fused.py): one compiled pass per group from each rule's one declaration, against
torch.optim bit for bit, for built-in rules and users' rules, across hyper-parameter tables, checkpoints,
param-group edits, a second process, a missing compiler and the batched race's stacked step."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import descentlab.optim as dl
from descentlab.examples.adabelief import AdaBelief
from descentlab.examples.lion import Lion
from descentlab.optim import _fused, define_rule
from descentlab.optim._selfcheck import IEEESqrt
from descentlab.optim.stacked import StackedRule

SHAPES = [(3, 4), (17,), (1,), (33, 5), (), (40,)]

TABLE = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.1, "momentum": 0.5, "dampening": 0.3, "maximize": True}),
    ("Adagrad", {}),
    ("Adagrad", {"lr_decay": 0.01, "weight_decay": 0.1, "initial_accumulator_value": 0.3, "eps": 1e-6}),
    ("RMSprop", {}),
    ("RMSprop", {"centered": True, "momentum": 0.5, "weight_decay": 0.1, "alpha": 0.9}),
    ("Adam", {}),
    ("Adam", {"betas": (0.5, 0.6), "eps": 1e-3, "weight_decay": 0.1, "amsgrad": True}),
    ("Adam", {"maximize": True, "betas": (0.0, 0.0)}),
    ("AdamW", {}),
    ("AdamW", {"betas": (0.8, 0.9), "weight_decay": 0.3, "amsgrad": True}),
]


def _twins(dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    ours = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).requires_grad_() for s in SHAPES]
    return ours, [p.detach().clone().requires_grad_() for p in ours]


def _grads(params: list[torch.Tensor], theirs: list[torch.Tensor], gen: torch.Generator, skip: int = -1) -> None:
    for i, (p, q) in enumerate(zip(params, theirs, strict=True)):
        if i == skip:
            p.grad = q.grad = None
            continue
        g = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)
        p.grad, q.grad = g.clone(), g.clone()


def _run(ours_opt: torch.optim.Optimizer, theirs_opt: torch.optim.Optimizer, ours: list[torch.Tensor],
         theirs: list[torch.Tensor], steps: int, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    for t in range(steps):
        _grads(ours, theirs, gen, skip=t % (len(ours) + 2))
        ours_opt.step()
        theirs_opt.step()


def _assert_bitwise(ours: list[torch.Tensor], theirs: list[torch.Tensor], a: torch.optim.Optimizer,
                    b: torch.optim.Optimizer) -> None:
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q), f"max diff {(p.double() - q.double()).abs().max()}"
        for name, value in b.state[q].items():
            assert torch.equal(a.state[p][name], value), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(("cls", "kwargs"), TABLE, ids=[f"{c}-{i}" for i, (c, _) in enumerate(TABLE)])
def test_fused_is_torch_optim_bit_for_bit(cls: str, kwargs: dict, dtype: torch.dtype) -> None:
    ours, theirs = _twins(dtype)
    a, b = getattr(dl, cls)(ours, **kwargs), getattr(torch.optim, cls)(theirs, **kwargs)
    dl.set_engine(a, "fused")
    _run(a, b, ours, theirs, steps=6)
    _assert_bitwise(ours, theirs, a, b)
    route = dl.last_routes(a)[0]
    assert route.path == "fused", route


def test_auto_takes_the_fused_path() -> None:
    ours, theirs = _twins()
    a, b = dl.Adam(ours, lr=1e-2), torch.optim.Adam(theirs, lr=1e-2)
    _run(a, b, ours, theirs, steps=3)
    _assert_bitwise(ours, theirs, a, b)
    assert dl.last_routes(a)[0].path == "fused"


def _lion_reference(params: list[torch.Tensor], states: list[dict], lr: float, betas: tuple[float, float],
                    weight_decay: float) -> None:
    """Lion written out with torch ops, one parameter at a time (the paper's algorithm)."""
    for p, state in zip(params, states, strict=True):
        if p.grad is None:
            continue
        m = state.setdefault("exp_avg", torch.zeros_like(p))
        p.mul_(1 - lr * weight_decay)
        p.add_(m.lerp(p.grad, 1 - betas[0]).sign_(), alpha=-lr)
        m.lerp_(p.grad, 1 - betas[1])


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_a_user_rule_lion_is_fused_and_equals_its_core(weight_decay: float) -> None:
    ours, theirs = _twins()
    a = Lion(ours, lr=1e-2, betas=(0.8, 0.95), weight_decay=weight_decay)
    dl.set_engine(a, "fused")
    core = Lion(theirs, lr=1e-2, betas=(0.8, 0.95), weight_decay=weight_decay)
    dl.set_engine(core, "eager")
    _run(a, core, ours, theirs, steps=5)
    _assert_bitwise(ours, theirs, a, core)
    assert dl.last_routes(a)[0].path == "fused"
    # and the core is Lion: the paper's algorithm, written out
    mine = [p.detach().clone() for p in ours]
    for p, q in zip(mine, ours, strict=True):
        p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(3))
        q.grad = p.grad.clone()
    _lion_reference(mine, [{"exp_avg": a.state[q]["exp_avg"].clone()} for q in ours], 1e-2, (0.8, 0.95),
                    weight_decay)
    a.step()
    for p, q in zip(mine, ours, strict=True):
        assert torch.equal(p, q)


def test_adabelief_a_user_rule_with_a_square_root_is_fused_bitwise() -> None:
    ours, theirs = _twins()
    a, core = AdaBelief(ours, lr=1e-2), AdaBelief(theirs, lr=1e-2)
    dl.set_engine(a, "fused")
    dl.set_engine(core, "eager")
    _run(a, core, ours, theirs, steps=4)
    _assert_bitwise(ours, theirs, a, core)
    assert dl.last_routes(a)[0].path == "fused"


def test_fused_ieee_is_the_core_with_an_ieee_square_root_and_within_rounding_of_torch() -> None:
    ours, theirs = _twins()
    reference = [p.detach().clone().requires_grad_() for p in ours]
    a, b = dl.Adam(ours, lr=1e-2), torch.optim.Adam(theirs, lr=1e-2)
    c = dl.Adam(reference, lr=1e-2)
    dl.set_engine(a, "fused-ieee")
    dl.set_engine(c, "eager")
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        _grads(ours, theirs, gen)
        for p, q in zip(reference, ours, strict=True):
            p.grad = q.grad.clone()
        a.step()
        b.step()
        with IEEESqrt():
            c.step()
    for p, q, r in zip(ours, theirs, reference, strict=True):
        assert torch.equal(p, r)  # exactly the core's arithmetic, with the exact square root
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)  # torch's MKL root is within 1 ulp of it
    assert "IEEE sqrt" in dl.last_routes(a)[0].reason


def test_state_dict_moves_between_fused_and_torch_mid_run() -> None:
    ours, theirs = _twins()
    a, b = dl.Adam(ours, lr=1e-2, amsgrad=True), torch.optim.Adam(theirs, lr=1e-2, amsgrad=True)
    _run(a, b, ours, theirs, steps=3)
    a2, b2 = dl.Adam(ours, lr=1e-2, amsgrad=True), torch.optim.Adam(theirs, lr=1e-2, amsgrad=True)
    a2.load_state_dict(b.state_dict())  # ours continues from torch's checkpoint, torch from ours
    b2.load_state_dict(a.state_dict())
    _run(a2, b2, ours, theirs, steps=3, seed=2)
    _assert_bitwise(ours, theirs, a2, b2)
    assert dl.last_routes(a2)[0].path == "fused"


def test_param_group_edits_between_steps_are_honoured() -> None:
    ours, theirs = _twins()
    a, b = dl.Adam(ours[:4], lr=1e-2), torch.optim.Adam(theirs[:4], lr=1e-2)
    _run(a, b, ours[:4], theirs[:4], steps=2)
    for opt in (a, b):  # new values: lr, betas, a weight decay that switches a branch on, maximize
        opt.param_groups[0].update(lr=3e-3, betas=(0.5, 0.7), weight_decay=0.2)
    _run(a, b, ours[:4], theirs[:4], steps=2)
    for opt in (a, b):
        opt.param_groups[0].update(maximize=True, weight_decay=0.0)  # (torch cannot switch amsgrad on mid-run)
        opt.add_param_group({"params": ours[4:] if opt is a else theirs[4:], "lr": 0.1, "maximize": True})
    a.state[ours[0]].clear()  # a reset state starts afresh
    b.state[theirs[0]].clear()
    a.param_groups[0]["params"][1] = ours[5] = torch.randn(17, requires_grad=True)  # a replaced parameter
    theirs[5] = ours[5].detach().clone().requires_grad_()
    b.param_groups[0]["params"][1] = theirs[5]
    del a.param_groups[1]["params"][1]
    del b.param_groups[1]["params"][1]
    _run(a, b, ours, theirs, steps=3, seed=4)
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q)
    assert [r.path for r in dl.last_routes(a)] == ["fused", "fused"]


def test_a_second_process_with_other_betas_gets_its_own_numbers(tmp_path) -> None:
    """The kernel compiled here (and cached on disk) holds no hyper-parameter: a new process with other
    betas, reading the same cache, computes torch's numbers for its own betas."""
    ours, theirs = _twins()
    a, b = dl.Adam(ours, lr=1e-2), torch.optim.Adam(theirs, lr=1e-2)
    _run(a, b, ours, theirs, steps=2)
    _assert_bitwise(ours, theirs, a, b)
    script = textwrap.dedent("""
        import torch, descentlab.optim as dl
        torch.manual_seed(0)
        ours = [torch.randn(33, 5, requires_grad=True) for _ in range(3)]
        theirs = [p.detach().clone().requires_grad_() for p in ours]
        a = dl.Adam(ours, lr=1e-2, betas=(0.5, 0.6), eps=1e-4)
        b = torch.optim.Adam(theirs, lr=1e-2, betas=(0.5, 0.6), eps=1e-4)
        for _ in range(3):
            for p, q in zip(ours, theirs):
                p.grad = torch.randn(p.shape); q.grad = p.grad.clone()
            a.step(); b.step()
        assert dl.last_routes(a)[0].path == "fused", dl.last_routes(a)
        assert all(torch.equal(p, q) for p, q in zip(ours, theirs))
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_no_compiler_runs_the_core_with_the_reason(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # nothing cached: a build must happen
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(_fused, "LIBRARY", _fused._Library())
    ours, theirs = _twins()
    a, b = dl.Adagrad(ours, lr=0.1), torch.optim.Adagrad(theirs, lr=0.1)
    _run(a, b, ours, theirs, steps=2)
    _assert_bitwise(ours, theirs, a, b)
    route = dl.last_routes(a)[0]
    assert route.path == "eager" and "building the fused kernel failed" in route.reason, route


def test_an_op_the_generator_does_not_know_runs_the_core_with_the_reason() -> None:
    @define_rule(hypers={"lr": 0.1}, buffers=[])
    def exp_rule(param, grad, state, *, step, lr):
        return param.add(grad.exp(), alpha=-lr), {}

    params = [torch.randn(5, requires_grad=True)]
    params[0].grad = torch.randn(5)
    expected = params[0].detach() - 0.1 * params[0].grad.exp()
    opt = exp_rule.optimizer(params)
    dl.set_engine(opt, "fused")
    opt.step()
    route = dl.last_routes(opt)[0]
    assert route.path == "eager" and "exp is not known to the fused code generator" in route.reason
    torch.testing.assert_close(params[0].detach(), expected)


def test_the_fused_path_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_fused.DISABLE_VAR, "0")
    ours, theirs = _twins()
    a, b = dl.SGD(ours, lr=0.1), torch.optim.SGD(theirs, lr=0.1)
    _run(a, b, ours, theirs, steps=1)
    assert dl.last_routes(a)[0].path == "eager" and "DESCENTLAB_FUSED=0" in dl.last_routes(a)[0].reason


def test_a_tensor_lr_and_odd_tensors_go_to_the_core_inside_a_fused_group() -> None:
    ours, theirs = _twins()
    ours.append(torch.randn(6, 4).t().requires_grad_())  # not contiguous: the core steps it
    theirs.append(ours[-1].detach().clone().requires_grad_())
    a, b = dl.Adam(ours, lr=1e-2), torch.optim.Adam(theirs, lr=1e-2)
    _run(a, b, ours, theirs, steps=3)
    _assert_bitwise(ours, theirs, a, b)
    assert dl.last_routes(a)[0].path == "fused" and "parameter(s) on the core" in dl.last_routes(a)[0].reason
    a.param_groups[0]["lr"] = torch.tensor(1e-2)
    b.param_groups[0]["lr"] = torch.tensor(1e-2)
    _run(a, b, ours, theirs, steps=2)
    _assert_bitwise(ours, theirs, a, b)
    assert "lr is a tensor" in dl.last_routes(a)[0].reason


@pytest.mark.parametrize("name", ["Adam", "RMSprop", "SGD"])
def test_the_stacked_step_is_each_configurations_core_bit_for_bit(name: str) -> None:
    """A batched race's step: k configurations with their own lrs in one fused call; row i is what the
    core computes for configuration i alone (its lr as a number, as its param group holds it)."""
    rule = getattr(dl, name).rule
    hypers = {**getattr(dl, name)([torch.zeros(1, requires_grad=True)]).defaults, "momentum": 0.9} \
        if name != "Adam" else dict(dl.Adam([torch.zeros(1, requires_grad=True)]).defaults)
    lrs = [1e-2, 3e-3, 1e-1]
    gen = torch.Generator().manual_seed(0)
    stacked = [torch.randn(len(lrs), 7, 5, generator=gen), torch.randn(len(lrs), 3, 9, generator=gen).transpose(1, 2)]
    alone = [[s[i].clone() for s in stacked] for i in range(len(lrs))]
    together = StackedRule(rule, hypers, stacked)
    single = [StackedRule(rule, {**hypers, "lr": lr}, alone[i], fused=False) for i, lr in enumerate(lrs)]
    for _ in range(3):
        grads = [torch.randn(s.shape, generator=gen) for s in stacked]
        grads[1] = grads[1].transpose(1, 2).contiguous().transpose(1, 2)  # the batched-matmul layout
        together.step(stacked, grads, torch.tensor(lrs, dtype=torch.float64))
        for i, lr in enumerate(lrs):
            single[i].step(alone[i], [g[i] for g in grads], lr)
    for i in range(len(lrs)):
        for j, s in enumerate(stacked):
            assert torch.equal(s[i], alone[i][j])
            for key, value in together.state[j].items():
                assert torch.equal(value[i], single[i].state[j][key]), key


def test_auto_is_torchs_bits_even_where_the_kernel_cannot_reach_torchs_square_root(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A build whose vector square root the kernel cannot call (simulated: no address found) gets the IEEE
    root in the kernel; auto must then refuse it (the self-check sees the difference) and step on the core:
    the default path is torch's bits or it is not used."""
    monkeypatch.setattr(_fused, "LIBRARY", _fused._Library())  # no kernel checked yet in this process
    monkeypatch.setattr(_fused, "torch_sqrt", lambda: (0, 0))
    ours, theirs = _twins()
    a, b = dl.Adam(ours, lr=0.1), torch.optim.Adam(theirs, lr=0.1)
    _run(a, b, ours, theirs, steps=3)
    _assert_bitwise(ours, theirs, a, b)
    route = dl.last_routes(a)[0]
    if route.path != "fused":  # this build's torch.sqrt is not the IEEE root (MKL's on x86 wheels)
        assert route.path in ("eager", "flat") and "differs from the core" in route.reason, route


THREAD_SHAPES = [(1,), (511,), (512,), (513,), (3, 500), (4099,), (), (10_000,), (7, 7)]


@pytest.mark.parametrize(("cls", "kwargs"), [
    ("Adam", {"amsgrad": True, "weight_decay": 0.1}), ("Adagrad", {"lr_decay": 0.01}),
    ("RMSprop", {"centered": True, "momentum": 0.5}), ("SGD", {"momentum": 0.9, "nesterov": True}),
], ids=["Adam", "Adagrad", "RMSprop", "SGD"])
def test_any_thread_count_gives_the_same_bits(cls: str, kwargs: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel splits a step's elements across torch.get_num_threads() threads in runs of whole blocks
    (each square-root call over the same block as on one thread): 1, 2 and 3 threads give torch.optim's
    for-loop bits, and each state['step'] moves exactly once per step. GRAIN=1 makes even these small
    tensors split (inside a row, across rows, at a block boundary and off one)."""
    monkeypatch.setattr(_fused, "GRAIN", 1)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            gen = torch.Generator().manual_seed(5)
            ours = [torch.randn(s, generator=gen).requires_grad_() for s in THREAD_SHAPES]
            theirs = [p.detach().clone().requires_grad_() for p in ours]
            a, b = getattr(dl, cls)(ours, lr=1e-2, **kwargs), getattr(torch.optim, cls)(theirs, lr=1e-2, **kwargs)
            for _ in range(3):
                for p, q in zip(ours, theirs, strict=True):
                    p.grad = torch.randn(p.shape, generator=gen)
                    q.grad = p.grad.clone()
                a.step()
                b.step()
            assert dl.last_routes(a)[0].path == "fused", dl.last_routes(a)
            _assert_bitwise(ours, theirs, a, b)
            for p in ours:
                if "step" in a.state[p]:
                    assert a.state[p]["step"].item() == 3.0
            results.append([p.detach().clone() for p in ours])
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        assert all(torch.equal(x, y) for x, y in zip(results[0], other, strict=True))


def test_a_big_group_read_column_by_column_is_torch_bit_for_bit() -> None:
    """Groups of at least COLUMNS_FROM parameters are read a column at a time; any parameter the kernel
    cannot take (no gradient, a buffer the user replaced by a non-contiguous one, another dtype) sends
    the whole read row by row, with the same outcome as torch."""
    gen = torch.Generator().manual_seed(3)
    count = max(_fused.COLUMNS_FROM, _fused.CHUNK + 5)  # more than one chunk
    ours = [torch.randn(7 + i % 5, generator=gen).requires_grad_() for i in range(count)]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    a, b = dl.Adam(ours, lr=1e-2, amsgrad=True), torch.optim.Adam(theirs, lr=1e-2, amsgrad=True)
    for t in range(6):
        for i, (p, q) in enumerate(zip(ours, theirs, strict=True)):
            p.grad = None if (t == 2 and i == 40) else torch.randn(p.shape, generator=gen)
            q.grad = None if p.grad is None else p.grad.clone()
        if t == 4:  # a buffer replaced by a strided view holding the same values
            for opt, p in ((a, ours[count - 1]), (b, theirs[count - 1])):
                value = opt.state[p]["exp_avg"]
                wide = torch.zeros(value.numel() * 2)
                wide[::2] = value
                opt.state[p]["exp_avg"] = wide[::2]
        a.step()
        b.step()
        assert dl.last_routes(a)[0].path == "fused", dl.last_routes(a)
    _assert_bitwise(ours, theirs, a, b)


@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_the_stacked_steps_cache_gives_the_bits_of_a_fresh_step(name: str) -> None:
    """The stacked step keeps its address table and hyper rows between steps (:class:`StepCache`); every
    step on them is bitwise a step that built them afresh, the gradients new tensors at every step, the
    stack cut (``keep``) on the way."""
    from descentlab.optim._fused_stacked import StepCache

    rule = getattr(dl, name).rule
    extra = {"momentum": 0.9} if name == "SGD" else {}
    hypers = dict(getattr(dl, name)([torch.zeros(1, requires_grad=True)], **extra).defaults)
    gen = torch.Generator().manual_seed(1)
    lrs = torch.tensor([1e-2, 3e-3, 1e-1, 3e-2], dtype=torch.float64)
    shapes = ((7, 5), (9,))
    cached = [torch.randn(len(lrs), *shape, generator=gen) for shape in shapes]
    fresh = [t.clone() for t in cached]
    a, b = StackedRule(rule, hypers, cached), StackedRule(rule, hypers, fresh)
    for step in range(6):
        if step == 3:  # a configuration leaves the stack
            index = torch.tensor([0, 2, 3])
            cached[:] = [t.index_select(0, index) for t in cached]
            fresh[:] = [t.index_select(0, index) for t in fresh]
            a.keep(index)
            b.keep(index)
            lrs = lrs.index_select(0, index)
        grads = [torch.randn(t.shape, generator=gen) for t in cached]
        b.cache = StepCache()
        a.step(cached, [g.clone() for g in grads], lrs)
        b.step(fresh, [g.clone() for g in grads], lrs)
        assert a.cache.tables is not None or step == 0
        for mine, theirs in zip(cached, fresh, strict=True):
            assert torch.equal(mine, theirs)
