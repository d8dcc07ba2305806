"""``descentlab bench``'s target lines: a missed speed target says what step time it needs and whether
moving the step's bytes at the in-place bandwidth measured in the same run leaves that within reach."""

from __future__ import annotations

from typing import Any

from descentlab import bench


def _row(variant: str, ms: float, ours_x: float, gbps: float = 0.0) -> dict[str, Any]:
    return {"optimizer": "momentum", "layout": 5000, "variant": variant, "engine": "compiled", "ms": ms,
            "setup_s": 0.0, "gbps": gbps, "peak_mb": 100.0, "data_mb": 100.0, "ours_x": ours_x}


def _judge(ours_gbps: float) -> dict[str, tuple[bool, str]]:
    result = {"params": 20_000_000, "copy_gbps": 20.0, "inplace_gbps": 40.0, "rows": [
        _row("descentlab", 10.0, 1.0, ours_gbps),
        _row("torch for-loop", 60.0, 6.0),
        _row("torch fused", 30.0, 3.0)]}
    return {name: (met, numbers) for name, met, numbers in bench.targets(result)}


def test_a_missed_target_below_the_bandwidth_floor_says_it_is_out_of_reach() -> None:
    judged = _judge(ours_gbps=40.0)  # the step's bytes take 10 ms at 40 GB/s; 8x needs 7.5 ms
    met, numbers = judged["momentum @5000: >= 8x torch for-loop"]
    assert not met
    assert numbers == "6.00x (needs <= 7.50 ms a step; its bytes take 10.00 ms at the in-place bandwidth, out of reach)"
    assert judged["momentum @5000: >= 2.5x torch fused"] == (True, "3.00x")


def test_a_missed_target_above_the_floor_is_not_called_out_of_reach() -> None:
    met, numbers = _judge(ours_gbps=20.0)["momentum @5000: >= 8x torch for-loop"]  # bytes take 5 ms
    assert not met
    assert numbers == "6.00x (needs <= 7.50 ms a step; its bytes take 5.00 ms at the in-place bandwidth)"
