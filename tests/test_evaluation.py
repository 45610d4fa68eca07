"""Evaluation metrics and best-of-N selection on hand-made verdicts and a scripted scorer."""

from __future__ import annotations

import math

import pytest

from restrl.evaluation import (
    choose_best_of_n,
    pass_at_k,
    prm_prefixes,
    sample_metrics,
    score_answers,
    selection_metrics,
)
from restrl.evaluation.plots import plot_accuracy_vs_budget


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(5, 0, 1) == 0.0
    assert pass_at_k(5, 5, 3) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(4, 2))
    assert pass_at_k(10, 8, 3) == 1.0  # fewer than k failures: some draw always passes
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_sample_metrics_average_over_problems():
    rows = [
        {"problem_id": "a", "reward": 1.0, "strict": True},
        {"problem_id": "a", "reward": 0.5, "strict": False},
        {"problem_id": "b", "reward": 0.0, "strict": False},
        {"problem_id": "b", "reward": 0.0, "strict": False},
    ]
    metrics = sample_metrics(rows, ks=(1, 2))
    assert metrics["pass@1"] == pytest.approx((0.5 + 0.0) / 2)
    assert metrics["pass@2"] == pytest.approx((1.0 + 0.0) / 2)
    assert metrics["average_accuracy"] == pytest.approx(1.5 / 4)
    assert metrics["strict_accuracy"] == pytest.approx(0.25)
    assert selection_metrics(rows[:1] + rows[2:3]) == {
        "accuracy": 0.5, "accuracy_ci_low": 0.0, "accuracy_ci_high": 1.0,
        "strict_accuracy": 0.5, "average_accuracy": 0.5, "problems": 2.0}


def test_accuracies_are_per_problem_then_averaged_over_problems():
    """As the original's evaluation: a problem with more samples does not weigh more."""
    rows = [{"domain": "apps", "problem_id": "1", "reward": 1.0, "strict": True}] * 3 + [
        {"domain": "ds1000", "problem_id": "1", "reward": 0.0, "strict": False}]
    metrics = sample_metrics(rows)
    assert metrics["average_accuracy"] == metrics["strict_accuracy"] == 0.5
    assert metrics["problems"] == 2.0  # the same id in two domains is two problems


class LengthScorer:
    """Scores an answer by how many 'good' lines it has, minus bad ones (scripted)."""

    def __init__(self):
        self.calls = 0

    def score(self, prompts, answers):
        self.calls += 1
        return [a.count("good") - 2 * a.count("bad") for a in answers]


def test_best_of_n_keeps_the_highest_scored_sample_within_the_budget():
    completions = [
        {"problem_id": "p", "sample_idx": 0, "answer": "good\n"},
        {"problem_id": "p", "sample_idx": 1, "answer": "good\ngood\n"},
        {"problem_id": "p", "sample_idx": 2, "answer": "good\ngood\ngood\n"},
        {"problem_id": "q", "sample_idx": 0, "answer": "x\n"},
        {"problem_id": "q", "sample_idx": 1, "answer": "x\n"},
    ]
    scorer = LengthScorer()
    scores = score_answers(scorer, ["prompt"] * 5, [c["answer"] for c in completions])
    best = choose_best_of_n(completions, scores)
    assert [(b["problem_id"], b["sample_idx"]) for b in best] == [("p", 2), ("q", 0)]
    limited = choose_best_of_n(completions, scores, n=2)
    assert [(b["sample_idx"], b["budget"]) for b in limited] == [(1, 2), (0, 2)]


def test_a_vote_answers_with_the_program_whose_copies_score_highest_in_total():
    """answer_rule="vote" (and, with every score 1, the plain majority vote): copies of one
    program pool their scores; the highest single score wins only under "best"."""
    completions = [
        {"problem_id": "p", "sample_idx": 0, "program": "return 1\n"},
        {"problem_id": "p", "sample_idx": 1, "program": "return 2\n"},
        {"problem_id": "p", "sample_idx": 2, "program": "return 2  \n"},
        {"problem_id": "p", "sample_idx": 3, "program": "return 3\n"},
    ]
    scores = [0.9, 0.5, 0.5, 0.1]
    assert choose_best_of_n(completions, scores)[0]["sample_idx"] == 0
    assert choose_best_of_n(completions, scores, rule="vote")[0]["sample_idx"] == 1
    assert choose_best_of_n(completions, [1.0] * 4, rule="vote")[0]["sample_idx"] == 1
    assert choose_best_of_n(completions, [1.0] * 4, n=2, rule="vote")[0]["sample_idx"] == 0
    with pytest.raises(ValueError, match="answer rule"):
        choose_best_of_n(completions, scores, rule="mean")


def test_a_vote_breaks_ties_to_the_first_program_and_counts_indentation():
    from restrl.answers import pick_answer, program_key

    # Equal totals (up to float rounding): the program seen first.
    assert pick_answer(["a", "b", "b"], [0.3, 0.1, 0.2], "vote") == 0
    assert program_key("x = 1  \n\n") == program_key("x = 1")
    assert program_key("  x = 1") != program_key("x = 1")  # an IndentationError is not x = 1


def test_a_vote_over_negative_scores_still_favours_agreeing_programs():
    """An external reward model's logits can be negative: summed as they are, two agreeing
    copies would lose to one program."""
    from restrl.answers import pick_answer

    assert pick_answer(["x", "y", "y"], [-1.0, -0.6, -0.6], "vote") == 1
    assert pick_answer(["x", "y", "y"], [-1.0, -0.6, -0.6], "best") == 1
    assert pick_answer(["x", "y", "y"], [-0.5, -0.6, -0.6], "best") == 0


def test_answer_rules_must_be_distinct_known_rules():
    from restrl.evaluation.config import EvalConfig

    assert EvalConfig().answer_rules == ["best"]  # the original's rule only
    for rules in ([], ["vote", "vote"], ["mean"]):
        with pytest.raises(ValueError, match="answer_rules"):
            EvalConfig(answer_rules=rules)


class RecordingScorer:
    """Records what it is asked to score; scores a program by its length."""

    def __init__(self):
        self.calls = []

    def score(self, questions, answers):
        self.calls.append((list(questions), list(answers)))
        return [float(len(a)) for a in answers]


def test_best_of_n_scores_whole_programs_against_the_raw_problem_text():
    from restrl.evaluation.selection import score_completions
    from restrl.problems.model import Problem

    problems = [Problem("p", "toy", "Add one to x.", "def f(x):\n", "", "f"),
                Problem("p", "humaneval", "Double x.", "def g(x):\n", "", "g")]
    completions = [
        {"domain": "toy", "problem_id": "p", "sample_idx": 0, "code": "    return x+1",
         "program": "def f(x):\n    return x+1"},
        {"domain": "humaneval", "problem_id": "p", "sample_idx": 0, "code": "    return 2*x",
         "program": "def g(x):\n    return 2*x"},
        {"domain": "humaneval", "problem_id": "p", "sample_idx": 1, "code": "    return x+x+0",
         "program": "def g(x):\n    return x+x+0"},
    ]
    scorer = RecordingScorer()
    scores = score_completions(scorer, completions, problems)
    assert scorer.calls == [(["Add one to x.", "Double x.", "Double x."],
                             [c["program"] for c in completions])]  # one call, whole programs
    best = choose_best_of_n(completions, scores)
    assert [(b["domain"], b["sample_idx"]) for b in best] == [("humaneval", 1), ("toy", 0)]


def test_prm_scoring_takes_the_worst_step_in_one_batch():
    scorer = LengthScorer()
    answers = ["good\nbad\ngood\ngood\ngood\n", "good\n"]
    orm = score_answers(scorer, ["p", "p"], answers, "orm")
    prm = score_answers(scorer, ["p", "p"], answers, "prm")
    assert orm == [2, 1]          # the bad step is outweighed at the end
    assert prm == [-1, 1]         # but not when every step counts
    assert scorer.calls == 2      # one batch per call


def test_accuracy_plot_draws_base_and_trained_on_one_figure(tmp_path):
    curve = [("sample", 1, 0.2), ("sample", 2, 0.3), ("best_of_n", 1, 0.2),
             ("best_of_n", 2, 0.25), ("vm_mcts", 8, 0.55)]
    path = plot_accuracy_vs_budget({"base": curve, "trained": [(m, b, a + 0.1)
                                                               for m, b, a in curve]},
                                   tmp_path / "acc.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from restrl.evaluation.plots import markdown_image

    assert markdown_image(path, "curves").startswith("![curves](data:image/png;base64,iVBOR")


def test_accuracy_carries_a_95_percent_bootstrap_interval_over_problems():
    from restrl.evaluation.metrics import bootstrap_ci

    assert bootstrap_ci([1.0] * 10) == (1.0, 1.0)
    low, high = bootstrap_ci([1.0] * 50 + [0.0] * 50)
    assert 0.38 < low < 0.45 and 0.55 < high < 0.62  # ~ 0.5 -/+ 1.96 * 0.05
    rows = [{"problem_id": str(i), "reward": float(i % 2), "strict": bool(i % 2)}
            for i in range(40)]
    metrics = sample_metrics(rows)
    assert metrics["pass@1_ci_low"] < metrics["pass@1"] < metrics["pass@1_ci_high"]
    chosen = selection_metrics(rows)
    assert chosen["accuracy_ci_low"] < chosen["accuracy"] < chosen["accuracy_ci_high"]


def test_prm_prefixes_end_at_line_boundaries_and_keep_the_text_as_is():
    answer = "a = 1\r\nb = 2\n\n"
    assert prm_prefixes(answer) == ["a = 1\r\n", "a = 1\r\nb = 2\n", answer]
    assert prm_prefixes("x = 1") == ["x = 1"]  # no newline: the whole answer, unchanged


def test_each_method_states_the_completions_and_tokens_it_spent_per_problem():
    from restrl.evaluation.budget import sampling_budget, spent_budget

    rows = [{"domain": "toy", "problem_id": p, "sample_idx": i, "completion_tokens": 10 * (i + 1)}
            for p in ("a", "b") for i in range(4)]
    assert sampling_budget(rows, 1) == {"completions": 1.0, "tokens": 10.0}
    assert sampling_budget(rows, 2) == {"completions": 2.0, "tokens": 30.0}
    assert spent_budget([(8, 100), (6, 50)]) == {"completions": 7.0, "tokens": 75.0}


def test_ranking_metrics_measure_how_scores_order_verified_programs():
    from restrl.evaluation.ranking import auc, ranking_metrics

    assert auc([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 1.0
    assert auc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0
    assert auc([0.5, 0.5], [True, False]) == 0.5  # a tie counts half
    assert math.isnan(auc([0.3, 0.4], [True, True]))  # one class: undefined
    metrics = ranking_metrics([0.1, 0.4, 0.35, 0.8], [0.0, 0.2, 1.0, 1.0],
                              [False, False, True, True])
    assert metrics["auc"] == 0.75 and metrics["positives"] == 2.0
    assert "within_problem_auc" not in metrics  # without the rows' problems


def test_within_problem_auc_counts_only_pairs_of_the_same_problem():
    from restrl.evaluation.ranking import auc, ranking_metrics

    # Problem a is easy (3 of 4 pass), b hard (1 of 4): scores that only know which is hard
    # beat chance over all pairs, yet rank the failing sample first inside each problem.
    scores = [0.8, 0.85, 0.7, 0.9, 0.2, 0.15, 0.25, 0.1]
    passed = [True, True, True, False, False, False, False, True]
    groups = ["a"] * 4 + ["b"] * 4
    assert auc(scores, passed) == 9 / 16
    metrics = ranking_metrics(scores, [float(p) for p in passed], passed, groups)
    assert metrics["within_problem_auc"] == 0.0 and metrics["within_problem_pairs"] == 6.0
    tied = ranking_metrics([0.5, 0.5, 0.7], [1.0, 0.0, 1.0], [True, False, True], ["a", "a", "c"])
    assert tied["within_problem_auc"] == 0.5 and tied["within_problem_pairs"] == 1.0
    one_class = ranking_metrics([0.2, 0.3], [1.0, 1.0], [True, True], ["a", "a"])
    assert math.isnan(one_class["within_problem_auc"])


def test_calibration_bins_compare_mean_score_with_mean_reward():
    from restrl.evaluation.ranking import calibration_bins

    assert calibration_bins([0.1, 0.4, 0.35, 0.8], [0.0, 0.2, 1.0, 1.0], bins=2) == [
        (pytest.approx(0.225), 0.5, 2), (pytest.approx(0.6), 0.6, 2)]
