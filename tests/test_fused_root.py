"""The fused kernel's float32 square root: torch's own bits, by the fastest way this build allows.

On x86 wheels torch's ``sqrt`` is MKL's high-accuracy vector root. Where MKL takes its AVX2 path (Intel)
that root is the IEEE one; elsewhere (AMD CPUs, where MKL takes its SSE/AVX path) it is up to 1 ulp off,
and the kernel either calls MKL block by block or, once the emulation has matched torch.sqrt over every
float32 of [1, 4) and the rest of the root check, computes the same bits inline. These tests hold on
any build: whichever root the kernel takes, its steps are torch.optim's to the bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import descentlab.optim as dl
from descentlab.optim import _fused, _selfcheck


def _torch_root(values: np.ndarray) -> np.ndarray:
    return torch.sqrt(torch.from_numpy(values)).numpy()


def test_the_root_check_accepts_torchs_own_root_and_names_the_first_input_another_differs_at() -> None:
    try:
        assert _selfcheck.root_problem("test: torch's own", _torch_root) is None

        def one_ulp_off_at_2_5(values: np.ndarray) -> np.ndarray:
            out = _torch_root(values).copy()
            hit = values == np.float32(2.5)
            out[hit] = np.nextafter(out[hit], np.float32(np.inf))
            return out

        problem = _selfcheck.root_problem("test: one ulp off", one_ulp_off_at_2_5)
        assert problem is not None and "at 2.5 " in problem and "one ulp off" in problem
        # a candidate that differs only on a NaN's payload, or nowhere else, passes; one off on -0.0 does not
        def minus_zero_wrong(values: np.ndarray) -> np.ndarray:
            out = _torch_root(values).copy()
            out[(values == 0) & np.signbit(values)] = np.float32(0.0)
            return out

        problem = _selfcheck.root_problem("test: -0.0", minus_zero_wrong)
        assert problem is not None and "-0.0" in problem
    finally:
        for name in ("test: torch's own", "test: one ulp off", "test: -0.0"):
            _selfcheck._ROOT_PROBLEMS.pop(name, None)


def _kernel_roots() -> tuple[int, int, int]:
    kernels = [k for v in _fused.LIBRARY.variants.values() for k in v if (torch.float32, False) in k.checked]
    assert kernels
    outcomes = [k.checked[torch.float32, False] for k in kernels]
    assert all(problem is None for problem, _, _ in outcomes), outcomes
    return outcomes[-1][2]


def test_the_root_the_kernel_takes_is_the_fastest_that_reproduces_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """IEEE inline where torch's root is the IEEE one, else the emulation where it matches, else MKL's."""
    monkeypatch.setattr(_fused, "LIBRARY", _fused._Library())
    p = torch.nn.Parameter(torch.rand(300))
    opt = dl.Adam([p])
    p.grad = torch.randn(300)
    opt.step()
    assert dl.last_routes(opt)[0].path == "fused"
    fn_float, _, mode = _kernel_roots()
    mkl = _fused.torch_sqrt()[0]
    if _selfcheck.root_problem("ieee", np.sqrt) is None:
        assert (fn_float == mkl and mode & _fused.IEEE_ROOT) if mkl else fn_float == 0
    elif mkl and _selfcheck._ROOT_PROBLEMS.get("emulated", "unchecked") is None:
        assert fn_float == mkl and mode & _fused.EMULATE_ROOT
    else:
        assert fn_float == mkl and not mode & _fused.EMULATE_ROOT


def test_an_emulation_the_root_check_refuses_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fused, "LIBRARY", _fused._Library())
    real = _fused.root_problem
    monkeypatch.setattr(_fused, "root_problem",
                        lambda name, root: "simulated difference" if name == "emulated" else real(name, root))
    ours, theirs = torch.nn.Parameter(torch.rand(1000)), torch.nn.Parameter(torch.rand(1000))
    with torch.no_grad():
        theirs.copy_(ours)
    a, b = dl.Adam([ours], lr=0.01), torch.optim.Adam([theirs], lr=0.01)
    for _ in range(3):
        g = torch.randn(1000)
        ours.grad, theirs.grad = g.clone(), g.clone()
        a.step()
        b.step()
    assert dl.last_routes(a)[0].path == "fused"
    assert not _kernel_roots()[2] & _fused.EMULATE_ROOT
    assert torch.equal(ours, theirs)


# gradient magnitudes that put the second moments everywhere: zero, subnormal, the emulation's range
# ends (2^-96, 2^126), overflow to infinity, and NaN
MAGNITUDES = [0.0, 1e-45, 1e-30, 2.0 ** -49, 2.0 ** -48, 1e-20, 1e-3, 1.0, 3.0, 1e10, 2.0 ** 63, 1e19, 1e20,
              float("inf"), float("nan")]


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["Adam", "Adagrad", "RMSprop"]),
       st.lists(st.sampled_from(MAGNITUDES), min_size=1, max_size=6),
       st.integers(1, 1100), st.integers(0, 2 ** 31 - 1), st.booleans())
def test_every_kind_of_second_moment_gives_torchs_bits(name: str, magnitudes: list[float], length: int,
                                                       seed: int, flush_denormal: bool) -> None:
    """Blocks of normal values (the emulation), blocks with a zero, subnormal, huge, infinite or NaN
    second moment (MKL's function for the block), in any mix and length; also in flush-denormal mode,
    which changes torch's arithmetic and must change the kernel's the same way."""
    generator = torch.Generator().manual_seed(seed)
    scale = torch.tensor(magnitudes, dtype=torch.float64)[torch.randint(len(magnitudes), (length,),
                                                                         generator=generator)]
    start = torch.randn(length, generator=generator)
    ours, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    # eps = 0: the root alone is the denominator (an eps larger than the root hides it)
    kwargs = {"lr": 0.01, "eps": 0.0, **({"centered": True} if name == "RMSprop" else {})}
    a, b = getattr(dl, name)([ours], **kwargs), getattr(torch.optim, name)([theirs], **kwargs)
    torch.set_flush_denormal(flush_denormal)
    try:
        for _ in range(3):
            g = (torch.randn(length, generator=generator, dtype=torch.float64) * scale).float()
            ours.grad, theirs.grad = g.clone(), g.clone()
            a.step()
            b.step()
    finally:
        torch.set_flush_denormal(False)
    assert dl.last_routes(a)[0].path == "fused", dl.last_routes(a)
    same = (ours == theirs) | (ours.isnan() & theirs.isnan())
    assert bool(same.all()), (ours[~same][:5], theirs[~same][:5])
    for key, value in a.state[ours].items():
        other = b.state[theirs][key]
        assert bool(((value == other) | (value.isnan() & other.isnan())).all()), key


def test_a_rule_reading_a_buffers_old_value_after_the_root_is_fused_bitwise() -> None:
    """The staged loop writes an output in the stage that computes it unless a later stage still reads
    the slot's old value: here the step reads the old second moment after the root of the new one, so
    that buffer must be written last (written early, the step would read the new value)."""
    from descentlab.optim import define_rule

    @define_rule(name="OldOverNew", hypers={"lr": 1e-2, "beta": 0.9, "v0": 1.0},
                 buffers=[dl.Buffer("v", init=dl.filled_with("v0"))])
    def old_over_new(param, grad, state, *, step, lr, beta, v0):
        v_old = state["v"]
        v = v_old.mul(beta).addcmul_(grad, grad, value=1 - beta)
        return param.sub(v_old.div(v.sqrt()).mul(lr)), {"v": v}

    generator = torch.Generator().manual_seed(0)
    start = torch.randn(1000, generator=generator)
    p, q = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    fused, core = old_over_new.optimizer([p]), old_over_new.optimizer([q])
    dl.set_engine(core, "eager")
    for _ in range(3):
        g = torch.randn(1000, generator=generator)
        p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        core.step()
    assert dl.last_routes(fused)[0].path == "fused", dl.last_routes(fused)
    assert torch.equal(p, q) and torch.equal(fused.state[p]["v"], core.state[q]["v"])


@pytest.mark.parametrize("flush_denormal", [False, True])
def test_the_kernels_vector_roots_send_blocks_outside_their_range_to_torchs_function(flush_denormal: bool) -> None:
    """``dl_float_roots`` (what the kernel's loops compute): with IEEE_ROOT, blocks of normal inputs get the
    IEEE root and a block with a subnormal, zero or negative input gets torch's vector function for the
    whole block (as torch computes it, also in flush-denormal mode, which MKL's call sets aside); with
    EMULATE_ROOT, torch's bits where the root check accepted the emulation."""
    mkl = _fused.torch_sqrt()[0]
    if not mkl:
        pytest.skip("this torch build has no vector square root to fall back to")
    p = torch.nn.Parameter(torch.rand(64))
    opt = dl.Adam([p])
    p.grad = torch.randn(64)
    opt.step()
    kernel = next(k for v in _fused.LIBRARY.variants.values() for k in v if k.float_roots is not None)
    rng = np.random.default_rng(0)
    values = rng.random(128 * 6).astype(np.float32) * 10 + 0.01
    values[128 * 1 + 5] = np.float32(1e-40)  # subnormal
    values[128 * 3 + 127] = np.float32(0.0)
    values[128 * 4 + 64] = np.float32(-2.0)

    def roots(mode: int) -> np.ndarray:
        out = np.empty_like(values)
        kernel.float_roots(values.size, values.ctypes.data, out.ctypes.data, mkl, mode)
        return out

    torch.set_flush_denormal(flush_denormal)
    try:
        ieee = roots(_fused.VML_MODE | _fused.IEEE_ROOT)
        emulated = roots(_fused.VML_MODE | _fused.EMULATE_ROOT)
    finally:
        torch.set_flush_denormal(False)
    theirs = _torch_root(values)
    same = (ieee.view(np.uint32) == theirs.view(np.uint32)) | (np.isnan(ieee) & np.isnan(theirs))
    for block in (1, 3, 4):  # the blocks with an input outside the range: torch's function, every bit
        assert same[128 * block:128 * (block + 1)].all(), block
    normal = np.ones(values.size, bool)
    for block in (1, 3, 4):
        normal[128 * block:128 * (block + 1)] = False
    with np.errstate(invalid="ignore"):
        assert np.array_equal(ieee[normal].view(np.uint32), np.sqrt(values[normal]).view(np.uint32))
    assert ieee[128 * 1 + 5] > 0  # the subnormal's root, not a flushed zero
    if _selfcheck._ROOT_PROBLEMS.get("emulated", "unchecked") is None:  # the root check accepted it here
        assert ((emulated.view(np.uint32) == theirs.view(np.uint32)) | (np.isnan(emulated) & np.isnan(theirs))).all()


def test_a_rule_branching_on_a_values_type_steps_on_the_core_with_its_numbers() -> None:
    """``type(beta) is float and beta > 0.5``: on the trace's stand-ins the type test is False, so the
    comparison behind it is never recorded and no guard would see beta cross 0.5. Such an update is not
    traced (the reason names the builtin) and steps on the core: its numbers as beta moves across."""
    from descentlab.optim import define_rule
    from descentlab.optim._type_checks import type_inspection

    def scale_of(beta):
        return 0.1 if isinstance(beta, float) and beta > 0.5 else 1.0

    @define_rule(name="TypeBranch", hypers={"lr": 0.1, "beta": 0.4}, buffers=["avg"])
    def type_branch(param, grad, state, *, step, lr, beta):
        scale = 0.1 if type(beta) is float and beta > 0.5 else 1.0
        avg = state["avg"].mul(beta).add(grad)
        return param.add(avg, alpha=-lr * scale), {"avg": avg}

    @define_rule(name="TypeBranchInHelper", hypers={"lr": 0.1, "beta": 0.4}, buffers=["avg"])
    def helper_branch(param, grad, state, *, step, lr, beta):
        avg = state["avg"].mul(beta).add(grad)
        return param.add(avg, alpha=-lr * scale_of(beta)), {"avg": avg}

    assert "calls type()" in (type_inspection(type_branch.update) or "")
    assert "scale_of calls isinstance()" in (type_inspection(helper_branch.update) or "")
    for rule in (type_branch, helper_branch):
        p, q = torch.nn.Parameter(torch.ones(8)), torch.nn.Parameter(torch.ones(8))
        ours, core = rule.optimizer([p]), rule.optimizer([q])
        dl.set_engine(core, "eager")
        for beta in (0.4, 0.6, 0.4):
            for opt in (ours, core):
                opt.param_groups[0]["beta"] = beta
            p.grad, q.grad = torch.ones(8), torch.ones(8)
            ours.step()
            core.step()
            assert torch.equal(p, q), (rule.name, beta, p[0].item(), q[0].item())
        route = dl.last_routes(ours)[0]
        assert route.path != "fused" and "type" in route.reason, route

