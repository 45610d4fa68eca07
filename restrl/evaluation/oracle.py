"""The oracle: a scorer that values by the verifier, to check a search apart from its value model.

A complete program is valued by its verified reward; a partial state by the mean reward of
`rollouts` completions sampled from it (generated, verified, and counted in the budget). With it
VM-MCTS and best-of-N must rank as the methods promise; if they do not, the search is wrong, not
the value model. It needs the problems (to verify), the policy (to roll out) and a verifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from restrl.generation import GenerationConfig, Generator
from restrl.problems.model import Problem, ProblemKey
from restrl.prompts import format_prompt, postprocess, stop_strings


class OracleScorer:
    """Values (question, answer) pairs with the verifier; rollouts for partial states.

    `score` treats every answer as a complete program (best-of-N). `score_states` takes, per
    answer, whether it is complete (the search knows: a completion is, a new child's state is
    not). `spent[key]` is [completions, tokens] the rollouts generated for each problem.
    """

    def __init__(self, problems: Sequence[Problem], generator: Generator, tokenizer: Any,
                 verifier: Any, rollouts: int = 4, temperature: float = 0.7,
                 max_tokens: int = 512, seed: int = 0):
        self.by_question = {p.prompt: p for p in problems}
        if len(self.by_question) < len(problems):
            raise ValueError("two problems share a question text: the oracle cannot tell them "
                             "apart")
        self.generator, self.tokenizer, self.verifier = generator, tokenizer, verifier
        self.rollouts, self.temperature, self.max_tokens = rollouts, temperature, max_tokens
        self.seed = seed
        self.calls = 0
        self.spent: dict[ProblemKey, list[int]] = {p.key: [0, 0] for p in problems}

    def score(self, questions: Sequence[str], answers: Sequence[str]) -> list[float]:
        return self.score_states(questions, answers, [True] * len(answers))

    def score_states(self, questions: Sequence[str], answers: Sequence[str],
                     complete: Sequence[bool]) -> list[float]:
        problems = [self.by_question[q] for q in questions]
        programs = [[a] if done else self._rollouts(p, a)
                    for p, a, done in zip(problems, answers, complete, strict=True)]
        flat = [(p, program) for p, group in zip(problems, programs, strict=True)
                for program in group]
        verdicts = self.verifier.verify([p for p, _ in flat], [prog for _, prog in flat])
        values, start = [], 0
        for group in programs:
            rewards = [float(v.reward) for v in verdicts[start:start + len(group)]]
            values.append(sum(rewards) / len(rewards))
            start += len(group)
        return values

    def _rollouts(self, problem: Problem, state: str) -> list[str]:
        """`rollouts` full programs continuing `state`, as MCTS builds a completion."""
        prompt = format_prompt(problem, self.tokenizer) + state[len(problem.init_code):]
        self.calls += 1
        config = GenerationConfig(n=self.rollouts, temperature=self.temperature,
                                  max_tokens=self.max_tokens,
                                  stop=tuple(stop_strings(problem.domain)),
                                  seed=self.seed + self.calls)
        (samples,) = self.generator.generate([prompt], config).samples
        self.spent[problem.key][0] += len(samples)
        self.spent[problem.key][1] += sum(s.tokens for s in samples)
        return [state + postprocess(s.text, problem.domain)[0].rstrip() + "\n" for s in samples]
