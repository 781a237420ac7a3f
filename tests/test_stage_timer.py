import time

from segmentation_node.stage_timer import StageTimer


def test_percentiles_per_stage_over_a_bounded_window():
    timer = StageTimer(window=100)
    for value in range(1, 201):  # only the newest 100 (101..200) count
        timer.add("backend", float(value))
    with timer.time("conversion"):
        time.sleep(0.01)
    summary = timer.summary()
    assert list(summary) == ["backend", "conversion"]
    p50, p95, count = summary["backend"]
    assert (p50, round(p95, 2), count) == (150.5, 195.05, 100)
    assert 9.0 <= summary["conversion"][0] < 200.0 and summary["conversion"][2] == 1
