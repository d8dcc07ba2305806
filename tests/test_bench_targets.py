"""``descentlab bench``'s target lines (issue 26), judged for each descentlab engine mode: a missed speed
target says the step time and bandwidth it needs, next to the fastest rate any step of the same run moved
its bytes; the engine list is validated before any work starts."""

from __future__ import annotations

from typing import Any

import pytest

from descentlab import bench
from descentlab.cli import main


def _row(optimizer: str, layout: int, variant: str, ms: float, speedup: dict[str, float] | None = None
         ) -> dict[str, Any]:
    return {"optimizer": optimizer, "layout": layout, "variant": variant, "engine": "-", "ms": ms,
            "setup_s": 0.0, "gbps": 400 / ms, "peak_mb": 100.0, "data_mb": 100.0, "speedup": speedup or {}}


def _layout(optimizer: str, layout: int, torch_ms: dict[str, float], ours_ms: dict[str, float]
            ) -> list[dict[str, Any]]:
    """Rows of one (optimizer, layout); paired ratios as if every round took the medians."""
    rows = [_row(optimizer, layout, f"descentlab {mode}", ms, {v: t / ms for v, t in torch_ms.items()})
            for mode, ms in ours_ms.items()]
    return rows + [_row(optimizer, layout, variant, ms) for variant, ms in torch_ms.items()]


def _judge(rows: list[dict[str, Any]]) -> dict[str, tuple[bool, str]]:
    result = {"params": 20_000_000, "copy_gbps": 20.0, "rows": rows}
    return {name: (met, numbers) for name, met, numbers in bench.targets(result)}


TORCH_ADAM = {"torch for-loop": 180.0, "torch foreach": 170.0, "torch fused": 50.0}


def test_each_engine_mode_is_judged_against_torch_fused_at_5000_tensors() -> None:
    judged = _judge(_layout("adam", 5000, TORCH_ADAM, {"auto": 40.0, "compiled": 16.0}))
    assert judged["adam @5000 auto: >= 1.5x torch fused"] == (
        False, "1.25x (torch fused 50.00 ms, ours 40.00 ms); needs <= 33.33 ms a step, 12.0 GB/s; "
        "the fastest step of this run moved 25.0 GB/s")
    assert judged["adam @5000 compiled: >= 1.5x torch fused"] == (
        True, "3.12x (torch fused 50.00 ms, ours 16.00 ms)")
    assert len(judged) == 2  # no one-tensor target without a one-tensor layout


def test_rmsprop_is_judged_against_torchs_best_variant_which_has_no_fused_kernel() -> None:
    torch_ms = {"torch for-loop": 60.0, "torch foreach": 90.0}
    judged = _judge(_layout("rmsprop", 5000, torch_ms, {"auto": 25.0})
                    + _layout("rmsprop", 1, torch_ms, {"auto": 70.0}))
    met, numbers = judged["rmsprop @5000 auto: >= 1.5x torch's best"]
    assert met and numbers.startswith("2.40x (torch for-loop 60.00 ms")
    met, numbers = judged["rmsprop @1 auto: >= 1.0x torch's best (no fused)"]
    assert not met and numbers.startswith("0.86x (torch for-loop 60.00 ms")


def test_one_tensor_is_judged_against_torch_fused_for_every_optimizer_and_not_at_other_layouts() -> None:
    torch_ms = {"torch for-loop": 15.0, "torch foreach": 15.0, "torch fused": 9.5}
    judged = _judge(_layout("momentum", 1, torch_ms, {"auto": 9.5, "compiled": 9.0})
                    + _layout("adagrad", 5000, torch_ms, {"auto": 10.0})
                    + _layout("adam", 200, TORCH_ADAM, {"auto": 20.0}))
    assert judged["momentum @1 auto: >= 1.0x torch fused"][0]  # 1.0x exactly is met
    assert judged["momentum @1 compiled: >= 1.0x torch fused"][0]
    assert sorted(judged) == ["adagrad @5000 auto: >= 1.5x torch fused", "momentum @1 auto: >= 1.0x torch fused",
                              "momentum @1 compiled: >= 1.0x torch fused"]


def test_the_shipped_lion_at_5000_tensors_is_judged_against_torch_fused_adam() -> None:
    rows = [*_layout("adam", 5000, TORCH_ADAM, {"auto": 40.0}), _row(bench.AGAINST_ADAM, 5000, "descentlab auto", 45.0)]
    met, numbers = _judge(rows)["lion @5000 auto: no slower than torch fused adam"]
    assert met and numbers.startswith("1.11x (torch fused adam 50.00 ms, ours 45.00 ms")


def test_the_targets_text_names_each_mode_and_marks_a_miss() -> None:
    result = {"params": 20_000_000, "copy_gbps": 20.0,
              "rows": _layout("adagrad", 5000, {"torch fused": 50.0}, {"auto": 40.0, "compiled": 10.0})}
    text = bench.targets_text(result).splitlines()
    assert text[0] == "targets (issue 26), per descentlab engine mode:"
    assert [line.split()[0] for line in text[1:]] == ["MISSED", "met"]
    assert "adagrad @5000 auto: >= 1.5x torch fused" in text[1] and "compiled" in text[2]


@pytest.mark.parametrize("text", ["auto,warp", "", "auto,auto", " , "])
def test_a_bad_engine_list_is_one_line_naming_the_argument_and_exit_2(text: str, capsys) -> None:
    assert main(["bench", "--engine", text, "--no-train"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--engine" in err[0] and repr(text) in err[0]


def test_engine_lists_parse_in_order() -> None:
    assert bench.parse_engines("compiled, auto") == ["compiled", "auto"]
    assert bench.parse_engines("auto,eager,flat,compiled,fused-ieee") == ["auto", "eager", "flat", "compiled",
                                                                           "fused-ieee"]


def test_the_cache_flush_reads_more_than_the_last_level_cache(tmp_path) -> None:
    for index, size in (("index0", "48K"), ("index2", "2048K"), ("index3", "266240K"), ("index4", "n/a")):
        (tmp_path / index).mkdir()
        (tmp_path / index / "size").write_text(size + "\n")
    assert bench.last_level_cache_bytes(tmp_path) == 266240 * 1024
    assert bench.last_level_cache_bytes(tmp_path / "missing") is None
    flush = bench.CacheFlush()
    largest = bench.last_level_cache_bytes() or 0
    assert flush.buffer.numel() * 4 >= max(bench.FLUSH_MIN_BYTES, 1.25 * largest) - 4
    flush()
