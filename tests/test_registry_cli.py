"""The registry (create / names / resolve) and the ``descentlab optimizers`` / ``--version`` commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import descentlab
import descentlab.optim as dl
from descentlab.cli import main

ARTICLE = {  # the article's vocabulary -> (class, preset)
    "gd": (dl.SGD, {"momentum": 0.0, "nesterov": False}),
    "sgd": (dl.SGD, {"momentum": 0.0, "nesterov": False}),
    "momentum": (dl.SGD, {"momentum": 0.9, "nesterov": False}),
    "nesterov": (dl.SGD, {"momentum": 0.9, "nesterov": True}),
    "adagrad": (dl.Adagrad, {}),
    "rmsprop": (dl.RMSprop, {}),
    "adam": (dl.Adam, {"decoupled_weight_decay": False}),
    "adamw": (dl.AdamW, {"decoupled_weight_decay": True, "weight_decay": 1e-2}),
}


def test_names_contain_the_article_vocabulary() -> None:
    names = dl.names()
    assert set(ARTICLE) <= set(names)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", sorted(ARTICLE))
def test_create_builtin_names(name: str) -> None:
    cls, preset = ARTICLE[name]
    p = torch.ones(3, requires_grad=True)
    opt = dl.create(name, [p], lr=0.1)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.1
    for key, value in preset.items():
        assert group[key] == value, key
    overridden = dl.create(name, [torch.ones(1, requires_grad=True)], lr=0.1, weight_decay=0.5)
    assert overridden.param_groups[0]["weight_decay"] == 0.5


@pytest.mark.parametrize("name", dl.names())
def test_create_every_registered_name_steps(name: str) -> None:
    """Every name builds an optimizer with the entry's defaults that moves a param against its gradient."""
    p = torch.ones(3, requires_grad=True)
    opt = dl.create(name, [p])
    entry = dl.resolve(name)
    assert isinstance(opt, entry.cls) and isinstance(opt, torch.optim.Optimizer)
    for key, value in entry.defaults.items():
        assert opt.param_groups[0][key] == value, key
    for _ in range(3):
        opt.zero_grad()
        (p**2).sum().backward()
        opt.step()
    assert bool((p < 1).all()), f"{name} did not descend: {p}"


def test_create_matches_the_class() -> None:
    a = torch.linspace(-1, 1, 5, requires_grad=True)
    b = a.detach().clone().requires_grad_()
    via_registry, direct = dl.create("nesterov", [a], lr=0.1), dl.SGD([b], lr=0.1, momentum=0.9, nesterov=True)
    for _ in range(5):
        for p, opt in ((a, via_registry), (b, direct)):
            opt.zero_grad()
            (p**4).sum().backward()
            opt.step()
    assert torch.equal(a, b)


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match=re.escape("unknown optimizer 'adamax'; known: ")) as info:
        dl.create("adamax", [torch.ones(1, requires_grad=True)])
    message = str(info.value)
    for name in dl.names():
        assert re.search(rf"\b{re.escape(name)}\b", message), f"{name} missing from: {message}"
    with pytest.raises(TypeError, match=re.escape("optimizer name must be a string, got 3")):
        dl.resolve(3)  # type: ignore[arg-type]


def test_cli_optimizers_lists_every_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["optimizers"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line and not line[0].isspace()}
    for entry in dl.entries():
        assert entry.name in rows, entry.name
        assert entry.cls.__name__ in rows[entry.name]
        assert f"lr={entry.defaults['lr']:g}" in rows[entry.name]
    assert "momentum=0.9" in rows["momentum"] and "nesterov=True" in rows["nesterov"]
    assert "weight_decay=0.01" in rows["adamw"]


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"descentlab {descentlab.__version__}"


def test_cli_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["optimizers", "--no-such-flag"])
    assert info.value.code == 2
    assert "--no-such-flag" in capsys.readouterr().err


def test_console_script_prints_every_name() -> None:
    """The installed ``descentlab`` entry point (pyproject [project.scripts]) runs the same CLI."""
    script = Path(sys.executable).with_name("descentlab")
    assert script.exists(), f"console script not installed next to {sys.executable}"
    done = subprocess.run([str(script), "optimizers"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    for name in dl.names():
        assert re.search(rf"^{re.escape(name)}\s", done.stdout, re.MULTILINE), name
