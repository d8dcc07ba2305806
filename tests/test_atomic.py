"""Atomic writes: the file appears whole or not at all, with the permissions a plain open() gives."""

from __future__ import annotations

import os
import stat

import pytest

from descentlab.atomic import append_line, atomic_write_json, atomic_write_text, atomic_write_with, dumps


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_file_gets_the_same_mode_as_a_plain_open(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "atomic.txt", "y")
    assert _mode(tmp_path / "atomic.txt") == _mode(plain)
    assert (tmp_path / "atomic.txt").read_text() == "y"


def test_failed_writer_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})

    def explode(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write_with(target, explode)
    assert target.read_text().strip().startswith("{") and '"a": 1' in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_json_has_no_nan_and_append_adds_lines(tmp_path):
    assert dumps({"x": float("nan"), "y": (1, float("inf"))}) == '{"x": null, "y": [1, null]}'
    log = tmp_path / "log.jsonl"
    append_line(log, "a", fsync=True)
    append_line(log, "b\n")
    assert log.read_text() == "a\nb\n"


@pytest.mark.parametrize("stem", ["a" * 250, "é" * 125])
def test_a_name_at_the_file_systems_limit_is_written(tmp_path, stem: str) -> None:
    """The temp file beside the target is named from a clipped stem: a target whose name uses the whole
    limit (255 bytes here) is still written atomically (the CLI's path check accepts such a name)."""
    target = tmp_path / f"{stem}.html"
    atomic_write_text(target, "page")
    assert target.read_text() == "page"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
