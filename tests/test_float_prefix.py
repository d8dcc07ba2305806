"""The per-step scalar math run on Python floats (optim/_float_prefix.py) gives torch's float64 bits."""

from __future__ import annotations

import random

import pytest
import torch

from descentlab.optim._float_prefix import float_program


def _graph(fn, *example: torch.Tensor) -> torch.fx.GraphModule:
    """The graph dynamo captures for ``fn`` (placeholders keep their example values)."""
    seen: list[torch.fx.GraphModule] = []

    def backend(gm: torch.fx.GraphModule, _inputs: list) -> torch.fx.GraphModule:
        seen.append(gm)
        return gm

    torch._dynamo.reset()
    torch.compile(fn, backend=backend, dynamic=True, fullgraph=True)(*example)
    return seen[-1]


def _scalar(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64)


def _bias_corrections(step, lr, beta2):
    bias_correction1 = 1 - 0.9 ** step
    bias_correction2 = 1 - beta2 ** step
    return (-(lr / bias_correction1), bias_correction2 ** 0.5, bias_correction2 ** 2, bias_correction2 ** 3,
            bias_correction2 ** -0.5, bias_correction2 ** -1, bias_correction2 ** -2, bias_correction2 ** 1.7,
            bias_correction2 ** 0, bias_correction2 ** 1, torch.sqrt(bias_correction2), lr / (1 + (step - 1) * 0.3))


def test_same_bits_as_torch_over_random_steps_and_hyper_parameters() -> None:
    gm = _graph(_bias_corrections, _scalar(3.0), _scalar(1e-3), _scalar(0.999))
    program = float_program(gm)
    assert program is not None
    rng = random.Random(0)
    for _ in range(400):
        inputs = [_scalar(float(rng.randint(1, 20_000))), _scalar(rng.uniform(1e-5, 1.0)),
                  _scalar(rng.uniform(0.5, 0.99999))]
        ordered = [dict(zip(("l_step_", "l_lr_", "l_beta2_"), inputs, strict=True))[n.name]
                   for n in gm.graph.nodes if n.op == "placeholder"]
        expected = gm(*ordered)
        got = program(ordered)
        assert got is not None
        for e, g in zip(expected, got, strict=True):
            assert e.item() == g.item() or (e.isnan() and g.isnan()), (inputs, e.item(), g.item())


@pytest.mark.parametrize("fn", [lambda x: 1 / (x - x), lambda x: (-x) ** 0.3, lambda x: (x * 1e300) ** 9.0],
                         ids=["division by zero", "negative base", "overflow"])
def test_what_python_floats_refuse_runs_as_torch_ops(fn) -> None:
    """Torch gives inf or nan here; the float program says 'not this call' and the caller uses torch."""
    gm = _graph(fn, _scalar(1.0))
    program = float_program(gm)
    assert program is not None
    assert program([_scalar(1.0)]) is None
    assert not torch.isfinite(gm(_scalar(1.0))[0])


def test_graphs_with_other_operations_are_not_converted() -> None:
    assert float_program(_graph(lambda x: torch.exp(x) + 1, _scalar(1.0))) is None
    assert float_program(_graph(lambda x: x.float() * 2, _scalar(1.0))) is None


def test_square_roots_stay_torch_ops_and_keep_their_nan() -> None:
    gm = _graph(lambda x: ((x - 2) ** 0.5, torch.sqrt(x), x ** -0.5), _scalar(1.0))
    program = float_program(gm)
    assert program is not None
    for value in (1.0, 0.3, 7.25):
        got = [t.item() for t in program([_scalar(value)])]
        expected = [t.item() for t in gm(_scalar(value))]
        assert str(got) == str(expected)  # nan == nan as text
