"""Registry descriptions fit MLflow's VARCHAR(5000) column (PostgreSQL refuses longer ones)."""

from genops.tracking.model_card import DESCRIPTION_LIMIT, fit_description


def test_a_long_description_is_cut_at_a_line_and_says_so():
    text = "\n".join(f"| metric_{i} | {i} |" for i in range(1000))
    cut = fit_description(text)
    assert len(cut) <= DESCRIPTION_LIMIT and "MODEL_CARD.md" in cut.splitlines()[-1]
    assert all(line.startswith("| metric_") for line in cut.splitlines()[:-2])  # no line cut in half
    assert fit_description("short") == "short"
