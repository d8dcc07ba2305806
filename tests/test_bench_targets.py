"""``descentlab bench``'s target lines: a missed speed target says the step time and bandwidth it needs,
next to the fastest rate any step of the same run moved its bytes."""

from __future__ import annotations

from typing import Any

from descentlab import bench


def _row(variant: str, ms: float, ours_x: float, gbps: float = 0.0) -> dict[str, Any]:
    return {"optimizer": "momentum", "layout": 5000, "variant": variant, "engine": "compiled", "ms": ms,
            "setup_s": 0.0, "gbps": gbps, "peak_mb": 100.0, "data_mb": 100.0, "ours_x": ours_x}


def _judge(ours_ms: float) -> dict[str, tuple[bool, str]]:
    result = {"params": 20_000_000, "copy_gbps": 20.0, "rows": [
        _row("descentlab", ours_ms, 1.0, 400 / ours_ms),  # 400 MB a step
        _row("torch for-loop", 60.0, 60.0 / ours_ms, 400 / 60),
        _row("torch fused", 30.0, 30.0 / ours_ms, 400 / 30)]}
    return {name: (met, numbers) for name, met, numbers in bench.targets(result)}


def test_a_missed_target_says_the_bandwidth_it_needs_next_to_the_fastest_of_the_run() -> None:
    judged = _judge(ours_ms=10.0)
    met, numbers = judged["momentum @5000: >= 8x torch for-loop"]
    assert not met
    assert numbers == "6.00x (needs <= 7.50 ms a step, 53.3 GB/s; the fastest step of this run moved 40.0 GB/s)"
    assert judged["momentum @5000: >= 2.5x torch fused"] == (True, "3.00x")


def test_a_met_target_gives_the_speed_up_alone() -> None:
    met, numbers = _judge(ours_ms=7.0)["momentum @5000: >= 8x torch for-loop"]
    assert met and numbers == "8.57x"


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
