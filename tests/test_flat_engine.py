"""The flat-buffer engine (optim/_flat.py) gives the per-tensor reference path's numbers.

Every test runs the same model twice from the same start — once on the engine under test, once
with ``set_engine(opt, "eager")`` — and compares parameters and state after every step.
"""

from __future__ import annotations

import copy

import pytest
import torch

import descentlab.optim as dl
from descentlab.optim import _flat
from descentlab.optim._flat import STATS, set_engine
from optim_cases import CASES, Case

FLAT_CASES = CASES


def _model(seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).to(dtype)


def _groups(model: torch.nn.Module, case: Case) -> list[dict]:
    params = list(model.parameters())
    return [{"params": params[:2]}, {"params": params[2:], **case.group2}] if case.group2 else [{"params": params}]


def _loss(model: torch.nn.Module, step: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(step)
    x = torch.randn(5, 6, generator=gen, dtype=next(model.parameters()).dtype)
    return model(x).square().mean()


def _assert_same(a: torch.optim.Optimizer, b: torch.optim.Optimizer, atol: float, label: str) -> None:
    for pa, pb in zip((p for g in a.param_groups for p in g["params"]),
                      (p for g in b.param_groups for p in g["params"]), strict=True):
        torch.testing.assert_close(pa, pb, atol=atol, rtol=atol, msg=label)
        sa, sb = a.state.get(pa, {}), b.state.get(pb, {})
        assert sa.keys() == sb.keys(), label
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], atol=atol, rtol=atol, msg=f"{label} {key}")


def _twin(case: Case, dtype: torch.dtype = torch.float32, mode: str = "flat", seed: int = 0):
    fast_model, ref_model = _model(seed, dtype), _model(seed, dtype)
    fast = getattr(dl, case.cls)(_groups(fast_model, case), **case.kwargs())
    ref = getattr(dl, case.cls)(_groups(ref_model, case), **case.kwargs())
    set_engine(fast, mode)
    set_engine(ref, "eager")
    return fast_model, fast, ref_model, ref


OWN_GRADS = {"staged": _flat.OWN_GRAD_NUMEL, "weights-own": 20, "all-own": 1}
"""Gradient layouts: every gradient staged in the flat buffer (the default for this small model), the
two weight matrices (48 and 24 elements) stepped on their own gradients, every parameter on its own."""


@pytest.mark.parametrize("own_grads", OWN_GRADS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", FLAT_CASES, ids=[c.id for c in FLAT_CASES])
def test_flat_matches_per_tensor_path(case: Case, dtype: torch.dtype, own_grads: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_flat, "OWN_GRAD_NUMEL", OWN_GRADS[own_grads])
    fast_model, fast, ref_model, ref = _twin(case, dtype)
    before = STATS["flat_steps"]
    for step in range(8):
        for model, opt in ((fast_model, fast), (ref_model, ref)):
            opt.zero_grad(set_to_none=step % 2 == 0)  # fresh grad tensors, then in-place accumulation
            _loss(model, step).backward()
            if step == 4:  # one param without a gradient: this step falls back per-tensor
                next(model.parameters()).grad = None
            opt.step()
        _assert_same(fast, ref, 0.0 if dtype == torch.float64 else 1e-6, f"{case.id} step {step}")
    assert STATS["flat_steps"] > before, "the flat engine never ran"


def test_big_parameters_are_stepped_on_their_own_gradients_where_autograd_left_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After zero_grad() (set_to_none=True), backward hands out fresh gradients: the two weight
    matrices (>= OWN_GRAD_NUMEL here) keep theirs, untouched and uncopied; the biases are staged."""
    monkeypatch.setattr(_flat, "OWN_GRAD_NUMEL", 20)
    for mode in ("flat", "compiled"):
        fast_model, fast, ref_model, ref = _twin(Case("Adam", "own", {"lr": 0.01, "weight_decay": 0.1}), mode=mode)
        direct_before = STATS["direct_steps"]
        for step in range(4):
            for model, opt in ((fast_model, fast), (ref_model, ref)):
                opt.zero_grad()
                _loss(model, step).backward()
                arrived = {name: p.grad for name, p in model.named_parameters()}
                opt.step()
                if opt is fast and step > 0:
                    for name, p in model.named_parameters():
                        own = p.numel() >= 20
                        assert (p.grad is arrived[name]) == own, (mode, name)
                        moved = p.grad.untyped_storage().data_ptr() != arrived[name].untyped_storage().data_ptr()
                        assert moved == (not own), (mode, name)  # staged: copied into the flat buffer
            _assert_same(fast, ref, 1e-6, f"{mode} step {step}")
        if mode == "compiled":  # the staged run and each weight: one direct call each from the third step
            assert STATS["direct_steps"] - direct_before == 3 * 2


def test_parameters_are_views_and_grads_behave_like_torch() -> None:
    model = _model()
    params = list(model.parameters())
    opt = dl.Adam(model.parameters(), lr=0.01)
    for step in range(3):
        opt.zero_grad()  # set_to_none=True
        assert all(p.grad is None for p in params)
        _loss(model, step).backward()
        opt.step()
    assert list(model.parameters()) == params and all(a is b for a, b in zip(model.parameters(), params, strict=True))
    flat_storage = {p.untyped_storage().data_ptr() for p in params}
    assert len(flat_storage) == 1, "params should share one flat buffer"
    assert len({p.grad.untyped_storage().data_ptr() for p in params}) == 1
    # accumulation into the flat gradient buffer: two backwards add up
    opt.zero_grad(set_to_none=False)
    _loss(model, 0).backward()
    once = [p.grad.clone() for p in params]
    _loss(model, 0).backward()
    for p, g in zip(params, once, strict=True):
        torch.testing.assert_close(p.grad, 2 * g)


@pytest.mark.parametrize("cls", ["Adam", "RMSprop", "SGD"])
def test_state_dict_moves_to_and_from_torch_mid_run(cls: str) -> None:
    kw = {"lr": 0.01, "momentum": 0.9} if cls in ("SGD", "RMSprop") else {"lr": 0.01, "amsgrad": True}
    ours_model, theirs_model = _model(), _model()
    ours = getattr(dl, cls)(ours_model.parameters(), **kw)
    theirs = getattr(torch.optim, cls)(theirs_model.parameters(), **kw)
    for step in range(3):
        for model, opt in ((ours_model, ours), (theirs_model, theirs)):
            opt.zero_grad()
            _loss(model, step).backward()
            opt.step()
    # ours -> torch and torch -> ours, mid-run, then keep stepping both pairs
    ours2_model, theirs2_model = copy.deepcopy(ours_model), copy.deepcopy(theirs_model)
    theirs2 = getattr(torch.optim, cls)(ours2_model.parameters(), **kw)
    theirs2.load_state_dict(copy.deepcopy(ours.state_dict()))
    ours2 = getattr(dl, cls)(theirs2_model.parameters(), **kw)
    ours2.load_state_dict(copy.deepcopy(theirs.state_dict()))
    for step in range(3, 7):
        for model, opt in ((ours_model, ours), (theirs_model, theirs), (ours2_model, theirs2),
                           (theirs2_model, ours2)):
            opt.zero_grad()
            _loss(model, step).backward()
            opt.step()
    for a, b, c, d in zip(ours_model.parameters(), theirs_model.parameters(), ours2_model.parameters(),
                          theirs2_model.parameters(), strict=True):
        for other in (b, c, d):
            torch.testing.assert_close(a, other, atol=1e-6, rtol=1e-6)
    for key, value in ours2.state_dict()["state"][0].items():
        assert value.shape == theirs.state_dict()["state"][0][key].shape, key


def test_add_param_group_after_first_step_and_tied_weights() -> None:
    def build() -> tuple[torch.nn.Module, torch.nn.Module]:
        torch.manual_seed(1)
        emb = torch.nn.Embedding(7, 4)
        head = torch.nn.Linear(4, 7, bias=False)
        head.weight = emb.weight  # tied
        extra = torch.nn.Linear(7, 2)
        return torch.nn.ModuleList([emb, head]), extra

    runs = []
    for mode in ("flat", "eager"):
        tied, extra = build()
        opt = dl.RMSprop(tied.parameters(), lr=0.01, momentum=0.5, centered=True)
        set_engine(opt, mode)
        for step in range(6):
            if step == 2:
                opt.add_param_group({"params": extra.parameters(), "lr": 0.05})
            opt.zero_grad()
            idx = torch.tensor([step % 7, (step + 3) % 7])
            out = tied[1](tied[0](idx))
            loss = out.square().mean() + (extra(out).sum() if step >= 2 else 0)
            loss.backward()
            opt.step()
        assert tied[0].weight is tied[1].weight
        runs.append([p.detach().clone() for p in [*tied.parameters(), *extra.parameters()]])
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_replaced_param_data_is_rebound() -> None:
    model = _model()
    opt = dl.SGD(model.parameters(), lr=0.1)
    _loss(model, 0).backward()
    opt.step()
    weight = model[0].weight
    weight.data = torch.ones_like(weight)  # a user overwriting .data: the engine must notice
    opt.zero_grad(set_to_none=False)
    _loss(model, 1).backward()
    expected = 1 - 0.1 * weight.grad.clone()
    opt.step()
    torch.testing.assert_close(weight.detach(), expected)


@pytest.mark.parametrize("switch", [{"fused": False}, {"foreach": False}])
def test_per_tensor_switches_bypass_the_flat_engine(switch: dict) -> None:
    model = _model()
    opt = dl.Adam(model.parameters(), lr=0.01, **switch)
    before = STATS["flat_steps"] + STATS["compiled_steps"]
    for step in range(3):
        opt.zero_grad()
        _loss(model, step).backward()
        opt.step()
    assert STATS["flat_steps"] + STATS["compiled_steps"] == before


def test_engine_mode_is_validated() -> None:
    opt = dl.SGD(_model().parameters())
    with pytest.raises(ValueError, match="'turbo'"):
        set_engine(opt, "turbo")


def test_compiled_matches_eager_and_scheduler_never_recompiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """One compiled variant only (compilation is slow on 2 cores): Adam with amsgrad, weight decay and
    maximize, its lr driven by a scheduler for 100 steps, compared with the per-tensor path."""
    case = Case("Adam", "compiled", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01, "maximize": True})
    fast_model, fast, ref_model, ref = _twin(case, mode="compiled")
    schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=100) for o in (fast, ref)]
    steps_before, direct_before = STATS["compiled_steps"], STATS["direct_steps"]
    for step in range(100):
        for model, opt in ((fast_model, fast), (ref_model, ref)):
            opt.zero_grad()
            (-_loss(model, step)).backward()
            opt.step()
        for s in schedulers:
            s.step()
        if step == 1:  # step 0 creates the state per-tensor, step 1 compiles
            compiles_after_first = STATS["compiles"]
            assert compiles_after_first > 0
    assert STATS["compiled_steps"] - steps_before == 99
    assert STATS["direct_steps"] - direct_before == 98, "after the first compiled step, dynamo is skipped"
    assert STATS["compiles"] == compiles_after_first, "a changing lr must not recompile"
    assert STATS["hoisted"] > 0, "the bias corrections should run once per step, outside the element loop"
    _assert_same(fast, ref, 1e-5, "compiled vs eager after 100 steps")
    assert _flat.engine_mode(fast) == "compiled"


def test_hoisting_backend_moves_only_per_step_scalar_math_out_of_the_loop() -> None:
    """The split, with the graphs run uncompiled: pow/sub/div of step and lr go to the per-call prefix,
    every op on a full tensor stays in the remainder, and the result is the plain function's."""
    from descentlab.optim._compile import hoisting_backend

    seen: dict[str, torch.fx.GraphModule] = {}

    def keep_graph(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        seen["main"] = gm
        return gm.forward

    def backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        compiled = hoisting_backend(gm, example_inputs, compile_fn=keep_graph)
        seen["prefix"] = compiled.hoisted
        return compiled

    def update(p: torch.Tensor, m: torch.Tensor, step: torch.Tensor, lr: torch.Tensor) -> None:
        correction = 1 - 0.9**step
        m.mul_(0.9).add_(p)
        p.sub_(m * (lr / correction))

    compiled = torch.compile(update, backend=backend, dynamic=True, fullgraph=True)
    p, m = torch.randn(10, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    p2, m2 = p.clone(), m.clone()
    for step in (1.0, 2.0, 3.0):
        args = (torch.tensor(step, dtype=torch.float64), torch.tensor(0.1 * step, dtype=torch.float64))
        compiled(p, m, *args)
        update(p2, m2, *args)
        torch.testing.assert_close(p, p2, atol=0, rtol=0)
        torch.testing.assert_close(m, m2, atol=0, rtol=0)

    def ops(gm: torch.fx.GraphModule) -> set:
        return {str(getattr(n.target, "__name__", n.target)) for n in gm.graph.nodes
                if n.op in ("call_function", "call_method")}

    assert {"pow", "truediv"} <= ops(seen["prefix"]), ops(seen["prefix"])
    assert not {"pow", "truediv"} & ops(seen["main"]), ops(seen["main"])
    assert {"mul_", "add_", "sub_"} <= ops(seen["main"]), ops(seen["main"])


def test_bench_reports_every_variant_the_engine_memory_and_targets(tmp_path) -> None:
    """A tiny ``descentlab bench`` run (flat engine, nothing to compile): rows, engine labels, memory, JSON."""
    import json

    from descentlab import bench

    result = bench.run(["adam"], layouts=(1, 3), numel=3000, repeats=2, engine="flat", train=False)
    rows = result["rows"]
    assert [(r["layout"], r["variant"]) for r in rows] == [
        (layout, v) for layout in (1, 3) for v in ("descentlab", "torch for-loop", "torch foreach", "torch fused")]
    assert {r["engine"] for r in rows if r["variant"] == "descentlab"} == {"flat"}
    assert all(r["ms"] > 0 and r["peak_mb"] == r["peak_mb"] for r in rows)  # peak is a number, not NaN
    assert all((r["ours_x"] == 1.0) == (r["variant"] == "descentlab") or r["ours_x"] > 0 for r in rows)
    assert all(r["ours_x"] == 1.0 for r in rows if r["variant"] == "descentlab")  # paired with itself
    assert all(r["data_mb"] == pytest.approx(3000 * 4 * 4 / 2**20) for r in rows)  # param, grad, 2 moments
    judged = {name: met for name, met, _ in bench.targets(result)}
    assert set(judged) == {"adam @1: >= 0.95x torch fused", "adam @1: >= 60% of copy bandwidth",
                           "adam @1: peak memory <= torch fused + 5%", "adam @3: peak memory <= torch fused + 5%"}
    text = bench.table(result) + bench.targets_text(result)
    assert "descentlab" in text and "torch fused" in text and "targets" in text
    path = tmp_path / "bench.json"
    bench.write_json(result, str(path))
    assert json.loads(path.read_text())["rows"] == rows
    with pytest.raises(ValueError, match="layout"):
        bench.run(["adam"], layouts=(0,), numel=10)


def test_binding_frees_the_original_gradients_and_state() -> None:
    """No second copy: once the flat buffers exist, the tensors they replaced are garbage."""
    import gc
    import weakref

    model = _model()
    opt = dl.Adam(model.parameters(), lr=0.01)
    set_engine(opt, "flat")
    _loss(model, 0).backward()
    grads = [weakref.ref(p.grad) for p in model.parameters()]
    opt.step()  # creates the state per-tensor
    state = [weakref.ref(t) for st in opt.state.values() for t in st.values() if t.dim() > 0]
    assert all(r() is not None for r in state)
    opt.step()  # binds: grads and state are copied into the flat buffers
    gc.collect()
    assert [r() for r in grads] == [None] * len(grads), "an original gradient is still referenced"
    assert [r() for r in state] == [None] * len(state), "an original state tensor is still referenced"
    flat = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert len(flat) == 1


def test_scheduler_moving_a_static_hyper_parameter_neither_leaks_nor_recompiles_each_step():
    """OneCycleLR cycles Adam's betas every step: betas are static in the compiled update (rules branch
    on such values), so each value is a new variant. Kernels stay bounded, and past a few variants the
    compiled engine runs them uncompiled (with one warning) instead of compiling at every step."""
    model = torch.nn.Linear(8, 8)
    opt = dl.Adam(model.parameters(), lr=1e-3)
    _flat.set_engine(opt, "compiled")
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=_flat.MAX_KERNELS + 40)
    reference = torch.nn.Linear(8, 8)
    reference.load_state_dict(model.state_dict())
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-3)
    ref_schedule = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=0.01, total_steps=_flat.MAX_KERNELS + 40)
    compiles_before = _flat.STATS["compiles"]
    with pytest.warns(RuntimeWarning, match="scheduler is moving one of them") as caught:
        for _ in range(_flat.MAX_KERNELS + 30):
            x = torch.randn(4, 8)
            for net, o, sch in ((model, opt, schedule), (reference, ref_opt, ref_schedule)):
                o.zero_grad()
                net(x).pow(2).sum().backward()
                o.step()
                sch.step()
    assert sum("scheduler is moving" in str(w.message) for w in caught) == 1
    assert len(_flat._KERNELS) <= _flat.MAX_KERNELS
    assert _flat.STATS["compiles"] - compiles_before <= 2 * _flat.MAX_COMPILED_VARIANTS
    for mine, ref in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-6)
