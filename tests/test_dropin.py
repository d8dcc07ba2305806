"""What users do *to* an optimizer, against torch.optim doing the same, in every engine mode.

Each test trains twin models — descentlab (``eager``, ``flat`` or ``compiled``) and torch.optim's
default CPU path — through the same steps and the same intervention, and compares parameters and
state: bitwise for ``eager`` and ``flat``, within float32 (float64) rounding for ``compiled``.
The multi-process cases (Hogwild, DDP, ZeRO, FSDP2) are in ``test_dropin_distributed.py``.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch

import descentlab.optim as dl
from dropin import MODES, assert_same, assert_same_params, batches, loss_of, train_step, twin_models, twin_optimizers

RESETS = {
    "state.clear()": lambda opt, p: opt.state.clear(),
    "del state[p]": lambda opt, p: opt.state.__delitem__(p),
    "state[p].clear()": lambda opt, p: opt.state[p].clear(),
    "new state tensors": lambda opt, p: opt.state[p].update(
        exp_avg=torch.full_like(p, 0.01), exp_avg_sq=torch.full_like(p, 0.02)),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reset", RESETS)
def test_a_state_reset_is_honoured_and_saved(mode: str, reset: str) -> None:
    ours_m, theirs_m = twin_models()
    ours, theirs = twin_optimizers("Adam", ours_m.parameters(), theirs_m.parameters(), mode, lr=1e-2)
    data = batches(8)
    for t, batch in enumerate(data):
        if t == 4:
            RESETS[reset](ours, ours_m.head.weight)
            RESETS[reset](theirs, theirs_m.head.weight)
        train_step(ours_m, ours, batch)
        train_step(theirs_m, theirs, batch)
    assert_same_params(mode, ours_m, theirs_m)
    assert_same(mode, ours.state_dict(), theirs.state_dict(), "state_dict")
    assert len(ours.state_dict()["state"]) == len(list(ours_m.parameters()))


@pytest.mark.parametrize("mode", MODES)
def test_a_parameter_replaced_in_param_groups_is_the_one_stepped(mode: str) -> None:
    ours_m, theirs_m = twin_models()
    ours, theirs = twin_optimizers("SGD", ours_m.parameters(), theirs_m.parameters(), mode, lr=0.1, momentum=0.9)
    data = batches(6)
    for t, batch in enumerate(data):
        if t == 3:
            for model, opt in ((ours_m, ours), (theirs_m, theirs)):
                fresh = torch.nn.Parameter(model.head.weight.detach() * 0.5)
                index = next(i for i, p in enumerate(opt.param_groups[0]["params"]) if p is model.head.weight)
                model.head.weight = fresh
                opt.param_groups[0]["params"][index] = fresh  # same list, same length
        train_step(ours_m, ours, batch)
        train_step(theirs_m, theirs, batch)
    assert_same_params(mode, ours_m, theirs_m)
    assert_same(mode, ours.state[ours_m.head.weight], theirs.state[theirs_m.head.weight], "new parameter's state")
    for opt in (ours, theirs):  # the old parameter's state is left behind, so torch's state_dict fails alike
        with pytest.raises(KeyError):
            opt.state_dict()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
def test_a_model_moved_to_another_dtype_mid_run_behaves_as_with_torch(mode: str, dtype: torch.dtype) -> None:
    """torch keeps the old state's dtype, so the next step fails in both; reloading the state dict casts
    it to the parameters' new dtype, and training goes on alike. The model stays in its new dtype."""
    ours_m, theirs_m = twin_models()
    ours, theirs = twin_optimizers("Adam", ours_m.parameters(), theirs_m.parameters(), mode, lr=1e-2)
    data = batches(6)
    for batch in data[:3]:
        train_step(ours_m, ours, batch)
        train_step(theirs_m, theirs, batch)
    ours_m.to(dtype)
    theirs_m.to(dtype)
    moved = [(x.to(dtype), y) for x, y in data]
    errors = []
    for model, opt in ((ours_m, ours), (theirs_m, theirs)):
        with pytest.raises(RuntimeError) as caught:
            train_step(model, opt, moved[3])
        errors.append(type(caught.value))
        opt.load_state_dict(opt.state_dict())
    assert errors[0] is errors[1]
    for batch in moved[3:]:
        train_step(ours_m, ours, batch)
        train_step(theirs_m, theirs, batch)
    assert all(p.dtype == dtype for p in ours_m.parameters())
    assert_same_params(mode, ours_m, theirs_m, rtol=1e-2 if dtype == torch.bfloat16 else 1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_float64_parameters_get_float64_accuracy(mode: str) -> None:
    ours_m, theirs_m = twin_models(dtype=torch.float64)
    ours, theirs = twin_optimizers("Adam", ours_m.parameters(), theirs_m.parameters(), mode, lr=1e-2)
    for batch in batches(6, dtype=torch.float64):
        train_step(ours_m, ours, batch)
        train_step(theirs_m, theirs, batch)
    assert_same_params(mode, ours_m, theirs_m, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", MODES)
def test_saving_a_sub_module_saves_only_that_sub_module(mode: str) -> None:
    ours_m, theirs_m = twin_models()
    ours, theirs = twin_optimizers("Adam", ours_m.parameters(), theirs_m.parameters(), mode, lr=1e-2)
    for batch in batches(3):
        train_step(ours_m, ours, batch)
        train_step(theirs_m, theirs, batch)
    sizes = []
    for model in (ours_m, theirs_m):
        buffer = io.BytesIO()
        torch.save(model.head.state_dict(), buffer)
        sizes.append(len(buffer.getvalue()))
        assert all(p.untyped_storage().nbytes() == p.numel() * p.element_size() for p in model.parameters())
    assert sizes[0] == sizes[1]


def test_betas_mixing_a_float_and_a_tensor_are_refused_as_torch_refuses() -> None:
    p = torch.zeros(2, requires_grad=True)
    for params in ([p], None):
        with pytest.raises(ValueError, match="betas must be either both floats or both Tensors"):
            torch.optim.Adam(params, betas=(0.9, torch.tensor(0.99)))
        with pytest.raises(ValueError, match="betas must be either both floats or both Tensors"):
            dl.Adam(params, betas=(0.9, torch.tensor(0.99)))
    dl.Adam([p], betas=(torch.tensor(0.9), torch.tensor(0.99)))  # both tensors: accepted, as by torch


@pytest.mark.parametrize("mode", MODES)
def test_add_param_group_and_frozen_layers(mode: str) -> None:
    ours_m, theirs_m = twin_models()
    ours, theirs = twin_optimizers("Adam", ours_m.body.parameters(), theirs_m.body.parameters(), mode, lr=1e-2)
    for t, batch in enumerate(batches(8)):
        if t == 2:
            ours.add_param_group({"params": ours_m.head.parameters(), "lr": 3e-3})
            theirs.add_param_group({"params": theirs_m.head.parameters(), "lr": 3e-3})
        if t == 5:
            ours_m.body[0].requires_grad_(False)
            theirs_m.body[0].requires_grad_(False)
        train_step(ours_m, ours, batch)
        train_step(theirs_m, theirs, batch)
    assert_same_params(mode, ours_m, theirs_m)
    assert_same(mode, ours.state_dict(), theirs.state_dict(), "state_dict")


@pytest.mark.parametrize("mode", MODES)
def test_grad_scaler_with_inf_steps_and_clip_grad_norm(mode: str) -> None:
    """AMP's GradScaler unscales, skips the steps whose gradients overflowed (an inf is injected) and
    moves its scale; ``clip_grad_norm_`` rescales the gradients in place before each step."""
    ours_m, theirs_m = twin_models()
    ours, theirs = twin_optimizers("Adam", ours_m.parameters(), theirs_m.parameters(), mode, lr=1e-2)
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0**8) for _ in range(2)]
    for t, batch in enumerate(batches(8)):
        for model, opt, scaler in ((ours_m, ours, scalers[0]), (theirs_m, theirs, scalers[1])):
            opt.zero_grad()
            scaler.scale(loss_of(model, batch)).backward()
            if t in (2, 5):
                model.head.bias.grad[0] = float("inf")
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
            scaler.step(opt)
            scaler.update()
    assert scalers[0].get_scale() == scalers[1].get_scale() < 2.0**8
    assert_same_params(mode, ours_m, theirs_m)
    assert_same(mode, ours.state_dict(), theirs.state_dict(), "state_dict")


@pytest.mark.parametrize("mode", MODES)
def test_schedulers_swa_and_hooks(mode: str) -> None:
    ours_m, theirs_m = twin_models()
    ours, theirs = twin_optimizers("SGD", ours_m.parameters(), theirs_m.parameters(), mode, lr=0.05, momentum=0.9,
                                   nesterov=True)
    runs = []
    for model, opt in ((ours_m, ours), (theirs_m, theirs)):
        calls: list[str] = []
        opt.register_step_pre_hook(lambda o, args, kwargs, calls=calls: calls.append("pre"))
        opt.register_step_post_hook(lambda o, args, kwargs, calls=calls: calls.append("post"))
        averaged = torch.optim.swa_utils.AveragedModel(model)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
        swa = torch.optim.swa_utils.SWALR(opt, swa_lr=0.01, anneal_epochs=2)
        for t, batch in enumerate(batches(8)):
            train_step(model, opt, batch)
            if t < 4:
                cosine.step()
            else:
                averaged.update_parameters(model)
                swa.step()
        runs.append((averaged, calls))
    assert runs[0][1] == runs[1][1] == ["pre", "post"] * 8
    assert_same_params(mode, runs[0][0], runs[1][0])
    assert_same_params(mode, ours_m, theirs_m)


@pytest.mark.parametrize("mode", MODES)
def test_state_dict_moves_to_torch_and_back_mid_run(mode: str) -> None:
    ours_m, theirs_m = twin_models()
    ours, theirs = twin_optimizers("RMSprop", ours_m.parameters(), theirs_m.parameters(), mode, lr=1e-2,
                                   momentum=0.5, centered=True)
    data = batches(9)
    for t, batch in enumerate(data):
        if t == 3:  # ours continues from torch's state, torch from ours
            saved_ours, saved_theirs = copy.deepcopy(ours.state_dict()), copy.deepcopy(theirs.state_dict())
            ours.load_state_dict(saved_theirs)
            theirs.load_state_dict(saved_ours)
        train_step(ours_m, ours, batch)
        train_step(theirs_m, theirs, batch)
    assert_same_params(mode, ours_m, theirs_m)


# -- torch.compile: a traced step takes the core whatever the mode (engine.py), so one mode is enough ----------
def test_a_compiled_training_step_matches_torch_optim_compiled_the_same_way() -> None:
    """``torch.compile`` of a whole training step that calls ``opt.step()``: the step is traced with
    the state's ``step`` tensor, as torch.optim's is; both compiled steps agree within rounding, and
    both stay within rounding of eager torch."""
    ours_m, theirs_m = twin_models()
    eager_m = copy.deepcopy(theirs_m)
    ours, theirs = twin_optimizers("Adam", ours_m.parameters(), theirs_m.parameters(), "compiled", lr=1e-2)
    eager = torch.optim.Adam(eager_m.parameters(), lr=1e-2)
    steps = [torch.compile(train_step) for _ in range(2)]
    for batch in batches(6):
        steps[0](ours_m, ours, batch)
        steps[1](theirs_m, theirs, batch)
        train_step(eager_m, eager, batch)
    assert_same_params("compiled", ours_m, theirs_m)
    assert_same_params("compiled", ours_m, eager_m)
    assert float(ours.state[ours_m.head.weight]["step"]) == 6


def test_torch_compile_of_opt_step_runs_and_matches() -> None:
    """torch's own recipe for compiling an optimizer: ``torch.compile(opt.step)``."""
    ours_m, theirs_m = twin_models()
    ours, theirs = twin_optimizers("Adam", ours_m.parameters(), theirs_m.parameters(), "flat", lr=1e-2)
    ours_step, theirs_step = torch.compile(ours.step), torch.compile(theirs.step)
    for batch in batches(5):
        for model, opt, step in ((ours_m, ours, ours_step), (theirs_m, theirs, theirs_step)):
            opt.zero_grad()
            loss_of(model, batch).backward()
            step()
    assert_same_params("compiled", ours_m, theirs_m)


# -- found by the red-team pass (issue 13) ------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_state_loaded_with_other_strides_than_the_parameter_keeps_being_updated(mode: str) -> None:
    """A checkpoint saved in channels_last, resumed on a contiguous model: the state buffers keep their
    strides (torch's load_state_dict does not change them) and must still be written every step."""
    ours_m, theirs_m = twin_models()
    ours, theirs = twin_optimizers("Adam", ours_m.parameters(), theirs_m.parameters(), mode, lr=1e-2)
    for batch in batches(2):
        train_step(ours_m, ours, batch)
        train_step(theirs_m, theirs, batch)
    for opt in (ours, theirs):
        saved = copy.deepcopy(opt.state_dict())
        for state in saved["state"].values():
            for key in ("exp_avg", "exp_avg_sq"):
                if state[key].dim() == 2:
                    state[key] = state[key].t().contiguous().t()  # same values, transposed strides
        opt.load_state_dict(saved)
    before = ours.state[ours_m.body[0].weight]["exp_avg"].clone()
    for batch in batches(4, seed=2):
        train_step(ours_m, ours, batch)
        train_step(theirs_m, theirs, batch)
    assert not ours.state[ours_m.body[0].weight]["exp_avg"].is_contiguous()
    assert not torch.equal(ours.state[ours_m.body[0].weight]["exp_avg"], before)
    assert_same_params(mode, ours_m, theirs_m)
    assert_same(mode, ours.state_dict(), theirs.state_dict(), "state_dict")


@pytest.mark.parametrize("mode", MODES)
def test_parameters_sharing_memory_are_stepped_in_order_as_torch_does(mode: str) -> None:
    results = []
    for module in (dl, torch.optim):
        gen = torch.Generator().manual_seed(0)
        base = torch.nn.Parameter(torch.randn(6, 4, generator=gen))
        alias = torch.nn.Parameter(base.data)  # same storage
        others = [torch.nn.Parameter(torch.randn(3, generator=gen)) for _ in range(16)]
        params = [base, alias, *others]
        opt = module.SGD(params, lr=0.1, momentum=0.9)
        if module is dl:
            dl.set_engine(opt, mode)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            others[0].grad = others[1].detach()  # a gradient that is another parameter
            opt.step()
        results.append([p.detach().clone() for p in params])
    assert_same(mode, results[0], results[1], "params")


@pytest.mark.parametrize("mode", MODES)
def test_a_gradient_of_another_dtype_steps_as_torch_does_within_rounding(mode: str) -> None:
    """``model.double()`` mid-run keeps SGD's float32 momentum buffers; torch's in-place kernels compute in
    the promoted dtype and cast back, and so does the write-back (not bitwise: the rule computes out of
    place, so a promoted intermediate is not rounded to the buffer's dtype before its next use)."""
    ours_m, theirs_m = twin_models()
    ours, theirs = twin_optimizers("SGD", ours_m.parameters(), theirs_m.parameters(), mode, lr=0.05, momentum=0.9)
    data = batches(6)
    for batch in data[:2]:
        train_step(ours_m, ours, batch)
        train_step(theirs_m, theirs, batch)
    ours_m.double()
    theirs_m.double()
    for x, y in data[2:]:
        train_step(ours_m, ours, (x.double(), y))
        train_step(theirs_m, theirs, (x.double(), y))
    assert ours.state[ours_m.head.weight]["momentum_buffer"].dtype == torch.float32
    assert_same_params("compiled", ours_m, theirs_m, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", MODES)
def test_the_users_group_dicts_are_the_groups(mode: str) -> None:
    ours_m, theirs_m = twin_models()
    runs = []
    for model, module in ((ours_m, dl), (theirs_m, torch.optim)):
        body = {"params": model.body.parameters(), "lr": 1e-2}
        head = {"params": model.head.parameters(), "lr": 1e-2}
        opt = module.AdamW([body])
        opt.add_param_group(head)
        if module is dl:
            dl.set_engine(opt, mode)
        assert opt.param_groups[0] is body and opt.param_groups[1] is head
        for t, batch in enumerate(batches(5)):
            if t == 2:
                body["lr"], head["weight_decay"] = 0.0, 0.5  # written into the user's own dicts
            train_step(model, opt, batch)
        runs.append(opt)
    assert_same_params(mode, ours_m, theirs_m)


@pytest.mark.parametrize("mode", MODES)
def test_a_sparse_gradient_fails_before_anything_moves(mode: str) -> None:
    dense = [torch.nn.Parameter(torch.ones(3)) for _ in range(17)]
    sparse = torch.nn.Parameter(torch.ones(4))
    opt = dl.Adam([*dense, sparse], lr=0.1)
    dl.set_engine(opt, mode)
    for p in dense:
        p.grad = torch.ones(3)
    sparse.grad = torch.ones(4).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    assert all(torch.equal(p.detach(), torch.ones(3)) for p in dense)
    assert all("step" not in opt.state[p] or float(opt.state[p]["step"]) == 0 for p in dense)


def test_named_parameters_and_pickled_user_rules_work_as_with_torch() -> None:
    from descentlab.examples.lion import Lion

    ours_m, theirs_m = twin_models()
    ours = dl.Adam(ours_m.named_parameters(), lr=1e-2)
    theirs = torch.optim.Adam(theirs_m.named_parameters(), lr=1e-2)
    assert ours.state_dict()["param_groups"][0]["param_names"] == theirs.state_dict()["param_groups"][0]["param_names"]
    ours.load_state_dict(theirs.state_dict())
    buffer = io.BytesIO()
    torch.save(Lion(ours_m.parameters(), lr=1e-4), buffer)
    buffer.seek(0)
    assert type(torch.load(buffer, weights_only=False)) is Lion
