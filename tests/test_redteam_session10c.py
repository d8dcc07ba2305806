"""Red team, session 10c: the places that *use* the screens (``_bytecode.py``, ``_outside.py``) and the
caches around them — the batched race's stacked step and its ``StepCache``, the shape probe and its
class/exact caches, the screen's own cache, threads. Each test is a way in which the default engine
(``auto``), or the fused stacked step, gives other numbers than the core (``set_engine(opt, "eager")``,
``StackedRule(..., fused=False)``, k separate runs), or crashes where the core does not. Each fails on
1b179b1.
"""

from __future__ import annotations

import sys
import threading
import traceback

import pytest
import torch

import descentlab.optim as dl
from descentlab.optim import define_rule, engine
from descentlab.optim.ops import add_scaled
from descentlab.optim.stacked import StackedRule, stacking_problem

BIG = (2048, 4096)
"""A float32 tensor of exactly 32 MiB (engine.FLAT_MIN_BYTES): auto steps it on the flat path (slices)
whenever the fused kernel cannot take the rule."""


def _auto_and_eager(rule, shape, steps, before_step=lambda t: None, seed_each_step=False, **hypers):
    """Step an auto and an eager optimizer of ``rule`` on one parameter of ``shape`` (all zeros, gradient
    all ones); ``before_step(t)`` before each step. Returns (auto's param, eager's param, auto's routes)."""
    results = []
    for mode in ("auto", "eager"):
        param = torch.nn.Parameter(torch.zeros(shape))
        optimizer = rule.optimizer([param], **hypers)
        dl.set_engine(optimizer, mode)
        for t in range(steps):
            before_step(t)
            if seed_each_step:
                torch.manual_seed(t)
            param.grad = torch.ones(shape)
            optimizer.step()
        results.append((param.detach(), dl.last_routes(optimizer)))
    return results[0][0], results[1][0], results[0][1]


# --- 1. the shape probe's exact cache does not see an outside object changed in place -------------------

SHAPE_CFG = {"per_layer": False}


@define_rule(name="Red10cShapedByDict", hypers={"lr": 0.1}, buffers=[])
def shaped_by_dict(param, grad, state, *, step, lr):
    scale = 0.1 if SHAPE_CFG["per_layer"] and param.dim() == 2 else 1.0
    return param.add(grad, alpha=-lr * scale), {}


def test_a_shape_read_behind_a_dict_flag_set_mid_run_moves_auto_as_the_core() -> None:
    """A rule reading ``param.dim()`` only when a config dict's flag is set. The dict is not watchable, so
    the fused path refuses the rule and auto steps the 32 MiB tensor on the flat path; the shape probe
    before it ran once with the flag off, passed, and is cached by the exact key of the hyper-parameters
    (lr), which does not hold the dict. The flag is then set: eager takes 10x smaller steps on the 2-D
    tensor, the flat path (flattened slices, dim() == 1) goes on with 1x. Seen after 3 steps (flag set
    before step 2): auto -0.30, eager -0.12 (``_forget_if_outside_changed`` watches only the watchable
    places; the exact key ignores what the rule reads from outside)."""

    def flag(t: int) -> None:
        SHAPE_CFG["per_layer"] = t >= 1

    try:
        auto, eager, routes = _auto_and_eager(shaped_by_dict, BIG, 3, flag, lr=0.1)
    finally:
        SHAPE_CFG["per_layer"] = False
    assert torch.equal(auto, eager), (auto[0, 0].item(), eager[0, 0].item(), routes)


# --- 2. the shape probe samples sizes up to 48 elements: a rule reading numel() past that ---------------


@define_rule(name="Red10cBigTableScaled", hypers={"lr": 0.1}, buffers=[])
def big_table_scaled(param, grad, state, *, step, lr):
    scale = 0.1 if param.numel() >= 1_000_000 else 1.0  # embedding tables: 10x smaller steps
    return param.add(grad, alpha=-lr * scale), {}


def test_a_rule_reading_numel_past_the_probes_sizes_moves_auto_as_the_core() -> None:
    """A rule that takes 10x smaller steps on tensors of a million elements or more (embedding tables)
    declared elementwise. The fused trace refuses ``numel`` so auto takes the flat path for a 32 MiB
    tensor; the shape probe's tensors hold at most 48 elements, so it finds nothing and the flat path hands
    the rule 1 MiB slices (262,144 elements): the rule sees small tensors. After 2 steps: auto -0.20,
    eager -0.02 (10x). The batched race has the same gap (a stack of k runs has k times the elements)."""
    auto, eager, routes = _auto_and_eager(big_table_scaled, BIG, 2, lr=0.1)
    assert torch.equal(auto, eager), (auto[0, 0].item(), eager[0, 0].item(), routes)


# --- 3. the shape probe runs 3 steps: a rule reading the shape from step 4 on -----------------------------


@define_rule(name="Red10cLateShaped", hypers={"lr": 0.1}, buffers=[])
def late_shaped(param, grad, state, *, step, lr):
    scale = 0.1 if step > 3 and param.dim() == 2 else 1.0  # per-layer scaling after a warm-up
    return param.add(grad, alpha=-lr * scale), {}


def test_a_rule_reading_the_shape_after_the_probes_steps_moves_auto_as_the_core() -> None:
    """A rule that reads ``param.dim()`` only after step 3 (a warm-up). The fused trace refuses the
    comparison on the step, auto takes the flat path for the 32 MiB tensor, and the probe (PROBE_STEPS = 3
    steps) never reaches the shape read. After 5 steps: auto -0.50, eager -0.32."""
    auto, eager, routes = _auto_and_eager(late_shaped, BIG, 5, lr=0.1)
    assert torch.equal(auto, eager), (auto[0, 0].item(), eager[0, 0].item(), routes)


# --- 4. the screen is cached per update function (lru_cache): a helper rebound later is not re-read -----

RED10C_FACTOR = 1.0


def red10c_scale() -> float:
    return 1.0


@define_rule(name="Red10cHelped", hypers={"lr": 0.1}, buffers=[])
def helped(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * red10c_scale()), {}


def test_a_helper_redefined_to_read_a_new_global_is_watched_in_the_next_kernel() -> None:
    """``outside_reads`` is an ``lru_cache`` on the update: its locations are those of the helper as it
    was at the first step. A notebook cell redefines the helper to return a global ``RED10C_FACTOR``; the
    next kernel traced (a new variant: an optimizer with ``maximize=True``) reads it as a constant, and its
    watch list (from the cache) has the helper's name but not ``RED10C_FACTOR``. The factor is then set
    to 10: the kernel keeps 1. After 4 steps (10 from step 3): auto 0.40, eager 2.20, route 'fused'."""
    global red10c_scale, RED10C_FACTOR
    original = red10c_scale
    param = torch.nn.Parameter(torch.zeros(16))
    first = helped.optimizer([param], lr=0.1)
    param.grad = torch.ones(16)
    first.step()  # the screen of `helped` is computed (and cached) with the first helper

    def red10c_scale() -> float:
        return RED10C_FACTOR

    def factor(t: int) -> None:
        global RED10C_FACTOR
        RED10C_FACTOR = 10.0 if t >= 2 else 1.0

    try:
        auto, eager, routes = _auto_and_eager(helped, (16,), 4, factor, lr=0.1, maximize=True)
    finally:
        red10c_scale, RED10C_FACTOR = original, 1.0
    assert torch.equal(auto, eager), (auto[0].item(), eager[0].item(), routes)


def red10c_noise(grad):
    return grad * 0.0


@define_rule(name="Red10cNoisy", hypers={"lr": 0.1}, buffers=[])
def noisy(param, grad, state, *, step, lr):
    return param.add(grad + red10c_noise(grad), alpha=-lr), {}


def test_a_helper_redefined_to_draw_noise_is_an_effect() -> None:
    """The same cached screen, for the effects gate: the helper is redefined (after steps of this rule)
    to add gradient noise (``torch.randn_like``, an effect the screen knows: it steps on the core in every
    mode). The cached screen says no effect, so auto goes on to the shape probe (the watched helper moved,
    so the probe forgets and runs again), which calls the update on its own tensors and draws from the
    global generator; the core then draws other noise. The route even blames a shape read. Seeded the
    same before each step, noise from step 3: max |auto - eager| = 3.2e-3 after 4 steps."""
    global red10c_noise
    original = red10c_noise

    def noise_from_step_2(t: int) -> None:
        global red10c_noise
        if t == 0:
            red10c_noise = original
        if t == 2:
            def red10c_noise(grad):
                return torch.randn_like(grad) * 0.01

    try:
        auto, eager, routes = _auto_and_eager(noisy, (16,), 4, noise_from_step_2, seed_each_step=True, lr=0.1)
    finally:
        red10c_noise = original
    assert torch.equal(auto, eager), ((auto - eager).abs().max().item(), routes)


# --- 5. the batched race: a watched global changes mid-race -------------------------------------------------

RED10C_SHAPED = False


@define_rule(name="Red10cStackShaped", hypers={"lr": 0.1}, buffers=["m"])
def stack_shaped(param, grad, state, *, step, lr):
    m = state["m"].mul(0.5).add(grad)
    scale = 0.1 if RED10C_SHAPED and param.dim() == 2 else 1.0
    return add_scaled(param, m, -lr * scale), {"m": m}


def test_the_stacked_step_after_a_global_changed_gives_each_configurations_core_numbers() -> None:
    """A race checks ``stacking_problem`` once (None: the flag is off), then stacks the runs. The flag
    is set mid-race: the fused stacked step sees its watched global moved and leaves the step to the
    rule's update on the stacks, where ``param.dim()`` is 3, not 2 — so no configuration gets its own
    run's 10x smaller steps. ``stacking_problem`` itself stays cached at None (its own ``_PROBED`` in
    stacked.py never forgets on an outside change; a fresh one reports the problem). Seen: max |stacked -
    alone| = 0.28 and 0.056 after the first flagged step, 0.39 and 0.11 after the second."""
    global RED10C_SHAPED
    hypers = {"lr": 0.1, "maximize": False}
    assert stacking_problem(stack_shaped, hypers) is None
    lrs = [0.1, 0.03]
    gen = torch.Generator().manual_seed(2)
    stacked = [torch.randn(len(lrs), 6, 3, generator=gen)]
    alone = [[s[i].clone() for s in stacked] for i in range(len(lrs))]
    together = StackedRule(stack_shaped, hypers, stacked)
    single = [StackedRule(stack_shaped, {**hypers, "lr": lr}, alone[i], fused=False) for i, lr in enumerate(lrs)]
    try:
        for t in range(4):
            RED10C_SHAPED = t >= 2
            grads = [torch.randn(s.shape, generator=gen) for s in stacked]
            together.step(stacked, grads, torch.tensor(lrs, dtype=torch.float64))
            for i, lr in enumerate(lrs):
                single[i].step(alone[i], [g[i] for g in grads], lr)
            gaps = [(stacked[0][i] - alone[i][0]).abs().max().item() for i in range(len(lrs))]
            assert max(gaps) <= 1e-6, (t, gaps, stacking_problem(stack_shaped, hypers))
    finally:
        RED10C_SHAPED = False


# --- 6. the stacked step's plan cache keys on the hyper dict's identity -----------------------------------


@pytest.mark.parametrize("edit", ["math", "maximize"])
def test_the_stacked_steps_plan_sees_hyper_parameters_edited_in_place(edit: str) -> None:
    """``StepCache.hyper`` is reused while ``math`` is the same dict and the lrs are equal; a value
    edited in place (``StackedRule.math['momentum']``, or ``StackedRule.hypers['maximize']``, which
    ``step`` reads afresh at every step and passes on) keeps the old kernel and hyper rows, while the
    unfused stacked step (and each configuration's core) uses the new value. SGD momentum 0.9 -> 0.0 from
    step 3: max |fused - unfused| 0.28 at that step; maximize False -> True: 0.50."""
    rule = dl.SGD.rule
    hypers = dict(dl.SGD([torch.zeros(1, requires_grad=True)], momentum=0.9).defaults)
    lrs = torch.tensor([0.1, 0.03], dtype=torch.float64)
    gen = torch.Generator().manual_seed(2)
    fused = [torch.randn(2, 6, 3, generator=gen)]
    unfused = [fused[0].clone()]
    a, b = StackedRule(rule, hypers, fused), StackedRule(rule, hypers, unfused, fused=False)
    for t in range(4):
        if t == 2:
            for stack in (a, b):
                if edit == "math":
                    stack.math["momentum"] = 0.0
                else:
                    stack.hypers["maximize"] = True
        grad = torch.randn(2, 6, 3, generator=gen)
        a.step(fused, [grad.clone()], lrs)
        b.step(unfused, [grad.clone()], lrs)
        gap = (fused[0] - unfused[0]).abs().max().item()
        assert gap <= 1e-6, (t, gap)


# --- 7. threads: the probe's cache clean-up iterates shared dicts -------------------------------------------

RED10C_THREAD_SCALE = 1.0
RED10C_THREAD_CFG = {"on": True}


@define_rule(name="Red10cThreadA", hypers={"lr": 0.1}, buffers=[])
def thread_a(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * RED10C_THREAD_SCALE), {}


@define_rule(name="Red10cThreadB", hypers={"lr": 0.1}, buffers=[])
def thread_b(param, grad, state, *, step, lr):
    return param.add(grad, alpha=-lr * (1.0 if RED10C_THREAD_CFG["on"] else 2.0)), {}


def test_two_threads_stepping_while_a_global_changes_do_not_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """Thread A steps an optimizer of a rule reading a watched global that changes between its steps;
    thread B steps another rule under an lr schedule on the flat path (the probe keys at each lr). Auto's
    shape probe (``probe._forget_if_outside_changed``) then iterates ``probe._CLASSES``/``_PROBED`` in a
    list comprehension while B's probe inserts into them: ``RuntimeError: dictionary changed size during
    iteration`` (or "keys changed") out of ``opt.step()``, seen within 4-10 s (150-530 steps per thread) on
    this machine with a short switch interval. The core never touches these caches, so eager cannot."""
    global RED10C_THREAD_SCALE
    monkeypatch.setattr(engine, "FLAT_MIN_BYTES", 1)  # B on the flat path without 32 MiB tensors
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # widens the window; the default 5 ms only makes it rarer
    errors: list[str] = []
    stop = threading.Event()
    counts = [0, 0]

    def run_a() -> None:
        global RED10C_THREAD_SCALE
        param = torch.nn.Parameter(torch.zeros(8))
        optimizer = thread_a.optimizer([param], lr=0.1)
        try:
            while not stop.is_set():
                RED10C_THREAD_SCALE = float(1 + counts[0] % 3)
                param.grad = torch.ones(8)
                optimizer.step()
                counts[0] += 1
        except Exception:
            errors.append(traceback.format_exc())
            stop.set()

    def run_b() -> None:
        param = torch.nn.Parameter(torch.zeros(8))
        optimizer = thread_b.optimizer([param], lr=0.1)
        try:
            while not stop.is_set():
                optimizer.param_groups[0]["lr"] = 0.1 / (1 + counts[1])
                param.grad = torch.ones(8)
                optimizer.step()
                counts[1] += 1
        except Exception:
            errors.append(traceback.format_exc())
            stop.set()

    threads = [threading.Thread(target=run_a), threading.Thread(target=run_b)]
    try:
        for thread in threads:
            thread.start()
        stop.wait(12)  # (the crash came within 4-13 s before the fix; the suite has a time budget)
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
        RED10C_THREAD_SCALE = 1.0
    assert not errors, (counts, errors[0][-400:])
