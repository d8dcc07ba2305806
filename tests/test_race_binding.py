"""A race bound to its optimizers' code (racing/binding.py): the fingerprint is the same in every process,
sees an edit to a user's factory whatever its kind, and a race written before fingerprints is refused with
advice a user can follow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import descentlab
from descentlab.racing.protocol import make_config
from descentlab.racing.store import CONFIG, ResultsStore

SRC = str(Path(descentlab.__file__).resolve().parents[1])
FACTORIES = '''import functools
import torch


def hook(x):
    return x


def make(params, lr=0.1, hook=None):
    return torch.optim.SGD(params, lr=lr)


class Maker:
    def __call__(self, params, lr=0.1):
        return torch.optim.SGD(params, lr=lr * SCALE)


with_hook = functools.partial(make, hook=hook)
maker = Maker()
'''


def _fingerprint(folder: Path, name: str) -> str:
    code = f"from descentlab.racing.binding import optimizer_fingerprint; print(optimizer_fingerprint({name!r}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": f"{SRC}:{folder}", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_partial_holding_a_function_has_one_fingerprint_in_every_process(tmp_path):
    """``repr`` of a function holds its address, which moves from process to process: a fingerprint built on
    it refused every resume of such a race as "the code changed"."""
    (tmp_path / "factories.py").write_text(FACTORIES.replace("SCALE", "1"))
    assert _fingerprint(tmp_path, "factories:with_hook") == _fingerprint(tmp_path, "factories:with_hook")


def test_an_edit_to_a_callable_instances_class_changes_its_fingerprint(tmp_path):
    """A factory that is an object with ``__call__``: its class's source decides what it builds."""
    (tmp_path / "factories.py").write_text(FACTORIES.replace("SCALE", "1"))
    before = _fingerprint(tmp_path, "factories:maker")
    (tmp_path / "factories.py").write_text(FACTORIES.replace("SCALE", "2"))
    assert _fingerprint(tmp_path, "factories:maker") != before


def test_a_race_written_before_optimizer_fingerprints_is_refused_saying_to_use_another_out(tmp_path):
    config = make_config(task="digits", optimizers="sgd", lrs="0.1", seeds=1, epochs=1).to_json()
    binding = {"data_sha256": "a" * 64, "model_sha256": "b" * 64, "n_train": 10, "n_val": 5, "n_test": 5}
    (tmp_path / CONFIG).write_text(json.dumps({**config, "binding": binding}))
    now = {**config, "binding": {**binding, "optimizers_sha256": {"sgd": "c" * 64}}}
    with pytest.raises(ValueError, match=r"written by an earlier descentlab.*use another --out") as raised:
        ResultsStore.check(tmp_path, now)
    assert "restore" not in str(raised.value)
