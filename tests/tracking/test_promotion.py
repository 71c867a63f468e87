"""The promotion rule alone (the registry round trip is in test_pipeline)."""

import pytest

from genops.tracking.promotion import decide, half_width


def test_better_candidate_wins_and_worse_or_equal_does_not():
    assert decide(1.0, None, "min", 0.0)[0]
    assert decide(0.9, 1.0, "min", 0.0)[0]
    assert not decide(1.1, 1.0, "min", 0.0)[0]
    assert not decide(1.0, 1.0, "min", 0.0)[0]
    assert not decide(0.95, 1.0, "min", 0.1)[0]  # better, but not by the required 10 %
    assert decide(1.2, 1.0, "max", 0.1)[0]
    assert not decide(float("nan"), 1.0, "min", 0.0)[0]


def test_a_candidate_must_beat_the_champion_beyond_its_own_interval():
    inside = decide(38.0, 40.0, "min", 0.0, interval_half_width=2.5)  # better by 2, uncertain by 2.5
    assert not inside.promote and inside.required == 2.5 and "half-width 2.5" in inside.reason
    beyond = decide(37.0, 40.0, "min", 0.0, interval_half_width=2.5)
    assert beyond.promote and (beyond.margin, beyond.half_width, beyond.required) == (0.0, 2.5, 2.5)
    # The configured margin (10 % of 40 = 4) is larger than the interval: the margin is what is asked for.
    margin = decide(37.0, 40.0, "min", 0.1, interval_half_width=2.5)
    assert not margin.promote and margin.required == pytest.approx(4.0) and "the margin 4" in margin.reason
    assert decide(35.9, 40.0, "min", 0.1, interval_half_width=2.5).promote
    # Without an interval (evaluate.bootstrap 0) only the margin applies, and the reason says so.
    bare = decide(39.0, 40.0, "min", 0.0)
    assert bare.promote and bare.half_width is None and "evaluate.bootstrap is 0" in bare.reason
    assert not decide(0.52, 0.5, "max", 0.0, interval_half_width=0.03).promote
    assert decide(0.54, 0.5, "max", 0.0, interval_half_width=0.03).promote


def test_a_candidate_that_copies_its_training_data_is_never_promoted():
    copier = decide(10.0, 40.0, "min", 0.0, 1.0, copy_fraction=0.4, max_copy_fraction=0.1)
    assert not copier.promote and "copy_fraction 0.4 exceeds register.max_copy_fraction 0.1" in copier.reason
    assert (copier.margin, copier.half_width, copier.required) == (0.0, 1.0, 1.0)  # the numbers are still recorded
    assert not decide(10.0, None, "min", 0.0, copy_fraction=0.4, max_copy_fraction=0.1).promote  # first version too
    assert decide(10.0, 40.0, "min", 0.0, 1.0, copy_fraction=0.1, max_copy_fraction=0.1).promote  # at the limit
    assert decide(10.0, 40.0, "min", 0.0, 1.0, copy_fraction=0.4, max_copy_fraction=None).promote  # no limit
    assert decide(10.0, 40.0, "min", 0.0, 1.0, copy_fraction=None, max_copy_fraction=0.1).promote  # not measured
    assert not decide(float("inf"), None, "min", 0.0, copy_fraction=0.0, max_copy_fraction=0.1).promote


def test_half_width_reads_the_interval_from_the_metrics():
    assert half_width({"fid": 40.0, "fid_low": 38.0, "fid_high": 43.0}, "fid") == 2.5
    assert half_width({"fid": 40.0}, "fid") is None
    assert half_width({"fid_low": 38.0, "fid_high": float("nan")}, "fid") is None
