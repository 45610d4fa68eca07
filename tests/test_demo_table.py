"""The demo table's rows (`restrl_flows.pipeline.summarize`) from an evaluation's metrics."""

from __future__ import annotations


def test_the_demo_table_shows_a_vote_row_only_when_the_vote_rule_ran():
    """With the original's rule alone (the default) there are no weighted-vote rows; the
    oracle's pass@N spends what the first N samples cost."""
    from restrl.evaluation.config import EvalConfig
    from restrl_flows.pipeline import summarize

    spent = {"completions": 8.0, "tokens": 250.0}
    metrics = {"sample/pass@1": 0.4, "sample/pass@8": 0.6, "majority_of_8/accuracy": 0.45,
               "best_of_8/accuracy": 0.42, "vm_mcts/accuracy": 0.43,
               **{f"{method}/{k}": v for method in ("sample", "majority_of_8", "best_of_8",
                                                      "vm_mcts") for k, v in spent.items()}}
    rows = summarize({"base": {"metrics": metrics}, "trained": {"metrics": metrics}},
                     EvalConfig(best_of_n=[8], sampling={"n": 8}))
    labels = [row["label"] for row in rows]
    assert "best-of-N, votes weighted by the value model" not in labels
    assert "VM-MCTS, answer by weighted vote" not in labels
    assert "majority vote of N samples (no value model)" in labels
    oracle = next(r for r in rows if r["label"].startswith("oracle: best-of-N"))
    assert (oracle["value"], oracle["completions"], oracle["tokens"]) == (0.6, 8.0, 250.0)
