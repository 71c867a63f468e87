"""The promotion rule alone (the registry round trip is in test_pipeline)."""

from genops.tracking.promotion import decide


def test_better_candidate_wins_and_worse_or_equal_does_not():
    assert decide(1.0, None, "min", 0.0)[0]
    assert decide(0.9, 1.0, "min", 0.0)[0]
    assert not decide(1.1, 1.0, "min", 0.0)[0]
    assert not decide(1.0, 1.0, "min", 0.0)[0]
    assert not decide(0.95, 1.0, "min", 0.1)[0]  # better, but not by the required 10 %
    assert decide(1.2, 1.0, "max", 0.1)[0]
    assert not decide(float("nan"), 1.0, "min", 0.0)[0]
