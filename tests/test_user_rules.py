"""The bring-your-own-rule API: declared rules get the torch shell, the registry and clear errors.

Lion and AdaBelief (shipped in descentlab.examples) are checked step by step against the
independent implementations of the ``pytorch-optimizer`` package.
"""

from __future__ import annotations

import copy
import sys
import textwrap
import warnings

import pytest
import pytorch_optimizer as po
import torch

import descentlab.optim as O
from descentlab.examples.adabelief import AdaBelief, adabelief
from descentlab.examples.lion import Lion, lion
from descentlab.optim import Buffer, RuleError, define_rule, real

LION_TABLE = [
    {},
    {"lr": 1e-3},
    {"lr": 3e-3, "betas": (0.95, 0.98)},
    {"lr": 1e-3, "weight_decay": 0.1},
    {"lr": 1e-3, "betas": (0.5, 0.9), "weight_decay": 1.0},
]
ADABELIEF_TABLE = [
    {},
    {"lr": 1e-2},
    {"lr": 1e-2, "betas": (0.8, 0.99)},
    {"lr": 1e-2, "weight_decay": 0.05},
    {"lr": 3e-3, "eps": 1e-8, "betas": (0.5, 0.9), "weight_decay": 0.5},
]
CASES = [(Lion, po.Lion, {}, hp) for hp in LION_TABLE] + [
    (AdaBelief, po.AdaBelief, {"rectify": False, "weight_decouple": True}, hp) for hp in ADABELIEF_TABLE
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(("ours", "theirs", "theirs_options", "hypers"), CASES,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)])
def test_example_rules_match_pytorch_optimizer(ours, theirs, theirs_options, hypers, dtype):
    """60 steps, two params of different shapes, same gradients: bitwise equal."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(6, 5), (7,)]
    start = [torch.randn(s, generator=generator, dtype=dtype) for s in shapes]
    ref = [t.clone().requires_grad_() for t in start]
    mine = [t.clone().requires_grad_() for t in start]
    ref_opt = theirs(ref, foreach=False, **theirs_options, **hypers)
    my_opt = ours(mine, **hypers)
    for _ in range(60):
        for a, b in zip(ref, mine, strict=True):
            g = torch.randn(a.shape, generator=generator, dtype=dtype)
            a.grad, b.grad = g.clone(), g.clone()
        ref_opt.step()
        my_opt.step()
    for a, b in zip(ref, mine, strict=True):
        assert torch.equal(a, b), (a - b).abs().max()


def test_declared_buffers_are_the_state_dict_keys():
    p = torch.zeros(3, requires_grad=True)
    opt = AdaBelief([p])
    p.grad = torch.ones(3)
    opt.step()
    assert set(opt.state_dict()["state"][0]) == {"step", "exp_avg", "exp_avg_var"}
    assert opt.state_dict()["param_groups"][0]["betas"] == (0.9, 0.999)


def test_state_dict_round_trip_mid_run_continues_identically():
    torch.manual_seed(1)
    grads = [torch.randn(4) for _ in range(20)]
    straight = torch.ones(4, requires_grad=True)
    opt = Lion([straight], lr=1e-2)
    for g in grads:
        straight.grad = g.clone()
        opt.step()
    first = torch.ones(4, requires_grad=True)
    opt1 = Lion([first], lr=1e-2)
    for g in grads[:10]:
        first.grad = g.clone()
        opt1.step()
    second = first.detach().clone().requires_grad_()
    opt2 = Lion([second], lr=0.5)  # the loaded groups override this lr
    opt2.load_state_dict(opt1.state_dict())
    for g in grads[10:]:
        second.grad = g.clone()
        opt2.step()
    assert torch.equal(second, straight)


def test_registry_names_and_import_paths_resolve_to_rules():
    assert O.resolve("lion").cls is Lion
    assert O.rule_of("descentlab.examples.adabelief:adabelief") is adabelief
    opt = O.create("descentlab.examples.lion:lion", [torch.zeros(2, requires_grad=True)], lr=1e-3)
    assert isinstance(opt, torch.optim.Optimizer) and opt.param_groups[0]["lr"] == 1e-3
    assert lion.optimizer is Lion


@pytest.mark.parametrize(("path", "message"), [
    ("no_such_module_xyz:rule", "cannot import module 'no_such_module_xyz'"),
    ("descentlab.examples.lion:nope", "has no attribute 'nope'"),
    ("descentlab.examples.lion:define_rule", "expected a descentlab Rule"),
])
def test_bad_import_path_is_named(path, message):
    with pytest.raises(ValueError, match=message) as info:
        O.resolve(path)
    assert path in str(info.value)


@pytest.mark.parametrize(("make_velocity", "message"), [
    (lambda grad: grad.sum(), r"rule 'broken'.*'velocity'.*shape \(\).*expected shape \(3,\)"),
    (lambda grad: grad.double(), r"rule 'broken'.*'velocity'.*torch.float64.*expected.*torch.float32"),
], ids=["wrong-shape", "wrong-dtype"])
def test_buffer_with_wrong_shape_or_dtype_names_rule_and_buffer(make_velocity, message):
    @define_rule(hypers={"lr": 0.1}, buffers=["velocity"])
    def broken(param, grad, state, *, step, lr):
        return param - lr * grad, {"velocity": make_velocity(grad)}

    p = torch.zeros(3, requires_grad=True)
    opt = broken.optimizer([p])
    p.grad = torch.ones(3)
    with pytest.raises(RuleError, match=message):
        opt.step()


def test_undeclared_buffer_returned_is_refused():
    @define_rule(hypers={"lr": 0.1})
    def sneaky(param, grad, state, *, step, lr):
        return param - lr * grad, {"extra": grad}

    p = torch.zeros(3, requires_grad=True)
    opt = sneaky.optimizer([p])
    p.grad = torch.ones(3)
    with pytest.raises(RuleError, match="rule 'sneaky': returned state 'extra'"):
        opt.step()


def test_undeclared_hyper_parameter_in_update_is_refused_at_definition():
    with pytest.raises(RuleError, match=r"rule 'uses_beta3'.*\['beta3'\].*not declared"):

        @define_rule(hypers={"lr": 0.1})
        def uses_beta3(param, grad, state, *, step, lr, beta3):
            return param, {}


def test_declared_but_unused_hyper_parameter_is_refused():
    with pytest.raises(RuleError, match=r"does not accept declared hyper-parameters \['gamma'\]"):

        @define_rule(hypers={"lr": 0.1, "gamma": 0.5})
        def ignores_gamma(param, grad, state, *, step, lr):
            return param, {}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_invalid_default_is_refused(bad):
    with pytest.raises(RuleError, match=r"rule 'bad_default': invalid default for lr"):

        @define_rule(hypers={"lr": bad})
        def bad_default(param, grad, state, *, step, lr):
            return param, {}


def test_hyper_parameter_ranges_of_a_user_rule_are_enforced():
    @define_rule(hypers={"lr": 0.1, "shrink": real("shrink", 0.5, low=0.0, high=1.0)})
    def shrinking(param, grad, state, *, step, lr, shrink):
        return param.mul(shrink).add(grad, alpha=-lr), {}

    with pytest.raises(ValueError, match=r"Shrinking: shrink must be in \[0, 1\], got 2.0"):
        shrinking.optimizer([torch.zeros(1, requires_grad=True)], shrink=2.0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'shrunk'"):
        shrinking.optimizer([torch.zeros(1, requires_grad=True)], shrunk=0.3)


def test_lazy_buffer_and_uninferable_hyper():
    with pytest.raises(RuleError, match=r"cannot infer the valid range of hyper-parameter mode='fast'"):
        define_rule(hypers={"lr": 0.1, "mode": "fast"})(lambda param, grad, state, *, step, lr, mode: (param, {}))

    @define_rule(hypers={"lr": 0.5}, buffers=[Buffer("first_grad", init=None)], counts_steps=False)
    def remember_first(param, grad, state, *, step, lr):
        first = state["first_grad"]
        return param.add(grad if first is None else first, alpha=-lr), {"first_grad": grad if first is None else first}

    p = torch.zeros(2, requires_grad=True)
    opt = remember_first.optimizer([p])
    for g in (torch.tensor([1.0, 2.0]), torch.tensor([5.0, 5.0])):
        p.grad = g
        opt.step()
    assert torch.equal(p.detach(), torch.tensor([-1.0, -2.0]))
    assert "step" not in opt.state[p]


def test_non_elementwise_rule_warns_once_and_still_trains():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")

        @define_rule(hypers={"lr": 0.1}, elementwise=False)
        def normalized(param, grad, state, *, step, lr):
            """Normalised gradient descent: w ← w − γ·g/‖g‖ (a norm over the whole tensor)."""
            return param - lr * grad / (grad.norm() + 1e-12), {}

    assert sum("not elementwise" in str(w.message) for w in caught) == 1
    p = torch.tensor([3.0, 4.0], requires_grad=True)
    opt = normalized.optimizer([p])
    p.grad = torch.tensor([3.0, 4.0])
    opt.step()
    assert torch.allclose(p.detach(), torch.tensor([3.0 - 0.06, 4.0 - 0.08]))


def test_rule_from_a_user_module_is_accepted_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "my_rules.py").write_text(textwrap.dedent('''
        from descentlab.optim import define_rule

        @define_rule(hypers={"lr": 0.01, "beta": 0.9}, buffers=["velocity"])
        def heavy_ball(param, grad, state, *, step, lr, beta):
            v = state["velocity"].mul(beta).add(grad)
            return param.add(v, alpha=-lr), {"velocity": v}
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        entry = O.resolve("my_rules:heavy_ball")
        torch_ref = torch.optim.SGD
        p, q = (torch.ones(3, requires_grad=True) for _ in range(2))
        mine, ref = entry.create([p], lr=0.1), torch_ref([q], lr=0.1, momentum=0.9)
        for k in range(5):
            p.grad = torch.full((3,), float(k + 1))
            q.grad = p.grad.clone()
            mine.step()
            ref.step()
        assert torch.allclose(p, q, rtol=1e-6)
    finally:
        sys.modules.pop("my_rules", None)


def test_builtin_rules_are_rules_declared_the_same_way():
    for name in ("sgd", "adagrad", "rmsprop", "adam", "adamw"):
        rule = O.rule_of(name)
        assert isinstance(rule, O.Rule)
        assert rule.optimizer.__mro__[1] is O.RuleOptimizer


def test_checkpoint_with_a_plain_number_step_loads_as_torch_does():
    """Older torch checkpoints store ``step`` as a number; torch converts it on load, so do we."""
    grads = [torch.full((2,), float(k)) for k in (1, 2, 3)]
    mine, ref = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    opt, ref_opt = O.Adam([mine], lr=0.1), torch.optim.Adam([ref], lr=0.1)
    mine.grad, ref.grad = grads[0].clone(), grads[0].clone()
    opt.step()
    ref_opt.step()
    saved = ref_opt.state_dict()
    saved["state"][0]["step"] = 1.0
    # a copy each, as torch.load gives: loading keeps the dict's tensors, which the two must not share
    opt.load_state_dict(copy.deepcopy(saved))
    ref_opt.load_state_dict(copy.deepcopy(saved))
    assert torch.is_tensor(opt.state[mine]["step"]) and opt.state[mine]["step"].dtype == torch.float32
    for g in grads[1:]:
        mine.grad, ref.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
    assert torch.equal(mine, ref)


def test_numpy_scalars_are_accepted_like_python_numbers_and_bools_are_not():
    import numpy as np

    p = torch.zeros(2, requires_grad=True)
    opt = O.Adam([p], lr=np.float32(1e-3), betas=(np.float64(0.9), 0.99))
    assert opt.param_groups[0]["lr"] == np.float32(1e-3)
    with pytest.raises(TypeError, match=r"SGD: lr must be a real number, got True \(bool\)"):
        O.SGD([p], lr=True)
    with pytest.raises(TypeError, match=r"momentum must be a real number"):
        O.SGD([p], lr=0.1, momentum=np.bool_(True))
