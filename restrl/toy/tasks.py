"""The toy domain: parameterised families of small programming tasks with unit tests.

A family is a task template ("sum of the elements of xs greater than {k}, times {m}") with a
reference body template and a generator of test inputs; an instance is the family with one
combination of its constants. Splits hold out *combinations*, not constant values: every test
instance's constants also occur (in other combinations) in the same family's train instances, so
a model trained on the train split has seen every token a test prompt contains (DESIGN.md,
"Facts learned on this machine").

Everything here is deterministic for a seed, pure Python and fast to import.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restrl.problems.model import Problem

SPLITS: tuple[str, ...] = ("train", "validation", "test")
TEST_FRACTION = 0.2  # of each family's combinations, chosen by a stable hash
VALIDATION_FRACTION = 0.1  # the next ones by that hash: where settings are chosen
N_CASES = 5  # asserts per problem

Constants = dict[str, Any]
Case = tuple[Any, ...]  # the positional arguments of one call


@dataclass(frozen=True)
class ToyFamily:
    """One task template. `task`, `body` are `str.format` templates over the constants.

    `axes` are the independent choices; each choice is a dict of constants (a choice may set
    several constants together, e.g. a pair of words). An instance's constants are one choice
    from every axis, merged, kept when `valid(constants)` holds. `cases(rng, constants)` returns
    the inputs of the instance's test calls.
    """

    name: str
    params: str
    task: str
    body: str
    axes: tuple[tuple[Constants, ...], ...]
    cases: Callable[[random.Random, Constants], list[Case]]
    valid: Callable[[Constants], bool] = field(default=lambda c: True)

    @property
    def signature(self) -> str:
        return f"def {self.name}({self.params}):\n"

    def prompt(self, constants: Constants) -> str:
        task = self.task.format(**constants)
        return f"Write a Python function `{self.name}({self.params})` that {task}."

    def reference_body(self, constants: Constants) -> str:
        return self.body.format(**constants)

    def reference(self, constants: Constants) -> str:
        """The full reference program: signature + body."""
        return self.signature + self.reference_body(constants)

    def combinations(self) -> list[Constants]:
        """Every valid combination of constants, in a fixed order."""
        combos = []
        for choice in itertools.product(*self.axes):
            merged: Constants = {}
            for part in choice:
                merged.update(part)
            if self.valid(merged):
                combos.append(merged)
        return combos

    def fingerprint(self) -> str:
        """Changes whenever the family's text or constants change (for model cache keys)."""
        text = json.dumps([self.name, self.params, self.task, self.body, self.combinations()],
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _axis(name: str, values: Sequence[Any]) -> tuple[Constants, ...]:
    return tuple({name: v} for v in values)


# ----------------------------------------------------------------------------- input generators


def _int_list(rng: random.Random, lo: int = -5, hi: int = 20, n_lo: int = 3,
              n_hi: int = 8) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(n_lo, n_hi))]


def _word(rng: random.Random, n_lo: int = 3, n_hi: int = 10, extra: str = "") -> str:
    letters = string.ascii_lowercase + extra * 4
    return "".join(rng.choice(letters) for _ in range(rng.randint(n_lo, n_hi)))


def _lists(rng: random.Random, c: Constants) -> list[Case]:
    return [(_int_list(rng),) for _ in range(N_CASES)]


def _long_lists(rng: random.Random, c: Constants) -> list[Case]:
    return [(_int_list(rng, n_lo=5, n_hi=12),) for _ in range(N_CASES)]


def _vowel_words(rng: random.Random, c: Constants) -> list[Case]:
    return [(_word(rng, extra="aeiou"),) for _ in range(N_CASES)]


def _letter_words(rng: random.Random, c: Constants) -> list[Case]:
    return [(_word(rng, extra=c["c"]),) for _ in range(N_CASES)]


def _words(rng: random.Random, c: Constants) -> list[Case]:
    return [(_word(rng, n_lo=1, n_hi=8),) for _ in range(N_CASES)]


def _parity_ints(rng: random.Random, c: Constants) -> list[Case]:
    # Both branches are tested: even and odd numbers alternate.
    return [(2 * rng.randint(-10, 25) + (i % 2),) for i in range(N_CASES)]


def _small_n(rng: random.Random, c: Constants) -> list[Case]:
    return [(rng.randint(c.get("a", 1), 14),) for _ in range(N_CASES)]


def _count_n(rng: random.Random, c: Constants) -> list[Case]:
    return [(rng.randint(1, 40),) for _ in range(N_CASES)]


def _digit_n(rng: random.Random, c: Constants) -> list[Case]:
    return [(rng.randint(0, 10 ** rng.randint(1, 5)),) for _ in range(N_CASES)]


def _divisible_n(rng: random.Random, c: Constants) -> list[Case]:
    return [(c["a"] ** rng.randint(0, 4) * rng.randint(1, 30),) for _ in range(N_CASES)]


def _mixed_ints(rng: random.Random, c: Constants) -> list[Case]:
    # One multiple of a, one of b (when not of a), the rest random.
    return [(c["a"] * rng.randint(1, 9),), (c["b"] * rng.randint(1, 9),)] + [
        (rng.randint(1, 60),) for _ in range(N_CASES - 2)
    ]


def _below_lists(rng: random.Random, c: Constants) -> list[Case]:
    # The last case has no element below k, so the default is tested.
    cases = [(_int_list(rng, lo=0, hi=25),) for _ in range(N_CASES - 1)]
    return cases + [([c["k"] + rng.randint(0, 9) for _ in range(rng.randint(1, 5))],)]


# ----------------------------------------------------------------------------- the families

FAMILIES: tuple[ToyFamily, ...] = (
    ToyFamily(
        name="sum_above",
        params="xs",
        task="returns the sum of the elements of the list xs that are greater than {k}, "
             "multiplied by {m}",
        body=(
            "    total = 0\n"
            "    for x in xs:\n"
            "        if x > {k}:\n"
            "            total += x\n"
            "    return total * {m}\n"
        ),
        axes=(_axis("k", range(0, 10)), _axis("m", range(1, 6))),
        cases=_lists,
    ),
    ToyFamily(
        name="count_vowels",
        params="s",
        task="counts the vowels (a, e, i, o, u) in the string s, then returns that count "
             "multiplied by {m} plus {k}",
        body=(
            "    count = 0\n"
            "    for ch in s:\n"
            "        if ch in \"aeiou\":\n"
            "            count += 1\n"
            "    return count * {m} + {k}\n"
        ),
        axes=(_axis("m", range(1, 5)), _axis("k", range(0, 10))),
        cases=_vowel_words,
    ),
    ToyFamily(
        name="even_odd",
        params="x",
        task="returns x * {a} + {b} if the integer x is even, and x - {c} otherwise",
        body=(
            "    if x % 2 == 0:\n"
            "        return x * {a} + {b}\n"
            "    return x - {c}\n"
        ),
        axes=(_axis("a", range(2, 6)), _axis("b", range(0, 10)), _axis("c", range(1, 10))),
        cases=_parity_ints,
    ),
    ToyFamily(
        name="reverse_step",
        params="xs",
        task="reverses the list xs, drops the first {a} elements of the reversed list, and "
             "returns every {k}-th element of the rest, starting with its first element",
        body=(
            "    ys = xs[::-1]\n"
            "    ys = ys[{a}:]\n"
            "    return ys[::{k}]\n"
        ),
        axes=(_axis("a", range(0, 5)), _axis("k", range(2, 6))),
        cases=_long_lists,
    ),
    ToyFamily(
        name="product_mod",
        params="n",
        task="returns the product of the integers from {a} to n inclusive, modulo {m}",
        body=(
            "    result = 1\n"
            "    for i in range({a}, n + 1):\n"
            "        result = result * i % {m}\n"
            "    return result\n"
        ),
        axes=(_axis("a", range(1, 4)),
              _axis("m", (7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47))),
        cases=_small_n,
    ),
    ToyFamily(
        name="count_multiples",
        params="n",
        task="counts the integers from 1 to n inclusive that are divisible by {a} or by {b}",
        body=(
            "    count = 0\n"
            "    for i in range(1, n + 1):\n"
            "        if i % {a} == 0 or i % {b} == 0:\n"
            "            count += 1\n"
            "    return count\n"
        ),
        axes=(_axis("a", range(2, 7)), _axis("b", range(3, 10))),
        cases=_count_n,
        valid=lambda c: c["a"] < c["b"],
    ),
    ToyFamily(
        name="scale_filter",
        params="xs",
        task="multiplies each element of the list xs by {a} and returns the list of those "
             "products that are less than {b}, in order",
        body=(
            "    result = []\n"
            "    for x in xs:\n"
            "        y = x * {a}\n"
            "        if y < {b}:\n"
            "            result.append(y)\n"
            "    return result\n"
        ),
        axes=(_axis("a", range(2, 6)), _axis("b", range(10, 45, 5))),
        cases=_lists,
    ),
    ToyFamily(
        name="replace_upper",
        params="s",
        task="replaces every letter '{c}' in the string s with '{d}' and returns the result "
             "in upper case",
        body=(
            "    t = s.replace(\"{c}\", \"{d}\")\n"
            "    return t.upper()\n"
        ),
        axes=(_axis("c", "abcdefgh"), _axis("d", ("x", "y", "z", "-", "*"))),
        cases=_letter_words,
    ),
    ToyFamily(
        name="repeat_head",
        params="s",
        task="takes the first {k} characters of the string s and returns them repeated {r} "
             "times, joined by '{sep}'",
        body=(
            "    head = s[:{k}]\n"
            "    return \"{sep}\".join([head] * {r})\n"
        ),
        axes=(_axis("k", range(1, 5)), _axis("r", range(2, 5)),
              _axis("sep", ("-", "+", ", ", "|"))),
        cases=_words,
    ),
    ToyFamily(
        name="max_below",
        params="xs",
        task="returns the largest element of the list xs that is less than {k}, or {d} if "
             "there is no such element",
        body=(
            "    candidates = [x for x in xs if x < {k}]\n"
            "    if not candidates:\n"
            "        return {d}\n"
            "    return max(candidates)\n"
        ),
        axes=(_axis("k", range(5, 16)), _axis("d", (-1, 0, -100, 999))),
        cases=_below_lists,
    ),
    ToyFamily(
        name="digit_sum",
        params="n",
        task="returns the sum of the decimal digits of the non-negative integer n, "
             "multiplied by {a}, minus {b}",
        body=(
            "    total = 0\n"
            "    while n > 0:\n"
            "        total += n % 10\n"
            "        n //= 10\n"
            "    return total * {a} - {b}\n"
        ),
        axes=(_axis("a", range(1, 6)), _axis("b", range(0, 10))),
        cases=_digit_n,
    ),
    ToyFamily(
        name="divide_count",
        params="n",
        task="counts how many times the positive integer n can be divided by {a} without "
             "remainder (dividing each time), and returns that count plus {b}",
        body=(
            "    count = 0\n"
            "    while n % {a} == 0:\n"
            "        n //= {a}\n"
            "        count += 1\n"
            "    return count + {b}\n"
        ),
        axes=(_axis("a", range(2, 6)), _axis("b", range(0, 6))),
        cases=_divisible_n,
    ),
    ToyFamily(
        name="fizz_word",
        params="x",
        task="returns '{w1}' if the integer x is divisible by {a}, otherwise '{w2}' if it is "
             "divisible by {b}, otherwise x converted to a string",
        body=(
            "    if x % {a} == 0:\n"
            "        return \"{w1}\"\n"
            "    if x % {b} == 0:\n"
            "        return \"{w2}\"\n"
            "    return str(x)\n"
        ),
        axes=(_axis("a", range(2, 6)), _axis("b", range(3, 8)),
              ({"w1": "fizz", "w2": "buzz"}, {"w1": "foo", "w2": "bar"},
               {"w1": "ping", "w2": "pong"}, {"w1": "hot", "w2": "cold"})),
        cases=_mixed_ints,
        valid=lambda c: c["a"] < c["b"],
    ),
    ToyFamily(
        name="clamp_all",
        params="xs",
        task="returns a new list in which every element of the list xs is clamped to the "
             "range from {lo} to {hi} inclusive",
        body=(
            "    result = []\n"
            "    for x in xs:\n"
            "        result.append(min(max(x, {lo}), {hi}))\n"
            "    return result\n"
        ),
        axes=(_axis("lo", range(-5, 4)), _axis("hi", range(5, 13))),
        cases=_lists,
    ),
    ToyFamily(
        name="running_total",
        params="xs",
        task="starts a total at {k}, adds each element of the list xs times {m} to it in "
             "turn, and returns the list of the totals after each step",
        body=(
            "    result = []\n"
            "    total = {k}\n"
            "    for x in xs:\n"
            "        total += x * {m}\n"
            "        result.append(total)\n"
            "    return result\n"
        ),
        axes=(_axis("k", range(0, 10)), _axis("m", range(1, 5))),
        cases=_lists,
    ),
)

FAMILY_BY_NAME: dict[str, ToyFamily] = {f.name: f for f in FAMILIES}


# ----------------------------------------------------------------------------- splits


def combo_key(family: str, constants: Constants) -> str:
    """A canonical text for one (family, constants) instance."""
    return family + "|" + json.dumps(constants, sort_keys=True)


def stable_hash(text: str, salt: str = "") -> int:
    return int.from_bytes(hashlib.sha256((salt + "\x00" + text).encode()).digest()[:8], "big")


def split_combinations(family: ToyFamily | str, split: str) -> list[Constants]:
    """The constant combinations of `family` in `split`, in a fixed order.

    Combinations are ranked by a stable hash. The test split is the `TEST_FRACTION` of them (at
    least one) with the lowest hash; the validation split the next `VALIDATION_FRACTION` (at
    least one), skipping any whose constants would then no longer all occur in train; train is
    the rest. Disjoint and complete by construction, and every held-out constant is also in
    train (held-out combinations, not held-out values).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    fam = FAMILY_BY_NAME[family] if isinstance(family, str) else family
    combos = fam.combinations()
    ranked = sorted(combos, key=lambda c: stable_hash(combo_key(fam.name, c), "split"))
    n_test = max(1, round(TEST_FRACTION * len(combos)))
    test, rest = ranked[:n_test], ranked[n_test:]
    validation = _validation_combinations(test, rest, max(1, round(VALIDATION_FRACTION
                                                                   * len(combos))))
    held_out = {combo_key(fam.name, c) for c in test + validation}
    chosen = {"test": test, "validation": validation,
              "train": [c for c in rest if combo_key(fam.name, c) not in held_out]}[split]
    keys = {combo_key(fam.name, c) for c in chosen}
    return [c for c in combos if combo_key(fam.name, c) in keys]


def _values(combos: Sequence[Constants]) -> set[tuple[str, str]]:
    return {(name, json.dumps(value)) for c in combos for name, value in c.items()}


def _validation_combinations(test: list[Constants], rest: list[Constants],
                             n: int) -> list[Constants]:
    """The first `n` of `rest` (hash order) that can leave train without taking a constant of
    a held-out combination out of it."""
    chosen: list[Constants] = []
    train = list(rest)
    for combo in rest:
        if len(chosen) == n:
            break
        remaining = [c for c in train if c is not combo]
        if _values(test + chosen + [combo]) <= _values(remaining):
            chosen.append(combo)
            train = remaining
    return chosen


def _check_code(name: str, cases: list[Case], outputs: list[Any]) -> str:
    lines = ["def check(candidate):"]
    for args, out in zip(cases, outputs, strict=True):
        lines.append(f"    assert candidate({', '.join(map(repr, args))}) == {out!r}")
    return "\n".join(lines) + "\n"


def make_problem(family: ToyFamily | str, constants: Constants, *, problem_id: str,
                 split: str, rng: random.Random) -> Problem:
    """One toy problem; its asserts are the reference's outputs on generated inputs."""
    fam = FAMILY_BY_NAME[family] if isinstance(family, str) else family
    reference = fam.reference(constants)
    namespace: dict[str, Any] = {}
    exec(compile(reference, f"<toy {fam.name}>", "exec"), namespace)  # trusted: our template
    function = namespace[fam.name]
    cases: list[Case] = []
    for case in fam.cases(rng, constants):
        if case not in cases:
            cases.append(case)
    outputs = [function(*copy.deepcopy(case)) for case in cases]
    return Problem(
        problem_id=problem_id,
        domain="toy",
        prompt=fam.prompt(constants),
        init_code=fam.signature,
        tests=_check_code(fam.name, cases, outputs),
        entry_point=fam.name,
        io_mode="check",
        meta={"family": fam.name, "constants": dict(constants), "reference": reference,
              "split": split},
    )


def toy_problems(split: str = "train", n: int | None = None, seed: int = 0,
                 families: Sequence[str] | None = None) -> list[Problem]:
    """`n` toy problems of `split`, deterministic for `seed`.

    Families take turns (problem i belongs to family i mod F); each family walks through its
    split's combinations in a seed-shuffled order, repeating them only when it runs out (a
    repeated combination gets new test inputs). `n=None` gives every combination of the split
    exactly once. problem_id is "toy/<family>/<split>-s<seed>-<i>": ids differ across seeds, so
    problem sets drawn with two seeds can be trained on together.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    chosen = [FAMILY_BY_NAME[f] for f in families] if families is not None else list(FAMILIES)
    if not chosen:
        raise ValueError("no toy families chosen")
    rng = random.Random(f"restrl-toy:{split}:{seed}")
    pools = []
    for fam in chosen:
        combos = split_combinations(fam, split)
        rng.shuffle(combos)
        pools.append(combos)
    if n is None:
        order = [(fi, ci) for fi, pool in enumerate(pools) for ci in range(len(pool))]
    else:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        order = [(i % len(chosen), (i // len(chosen)) % len(pools[i % len(chosen)]))
                 for i in range(n)]
    problems = []
    for i, (fi, ci) in enumerate(order):
        fam = chosen[fi]
        case_rng = random.Random(f"restrl-toy:{split}:{seed}:{i}")
        problem_id = f"toy/{fam.name}/{split}-s{seed}-{i}"
        problems.append(make_problem(fam, pools[fi][ci], problem_id=problem_id, split=split,
                                     rng=case_rng))
    return problems


def write_toy_problems(path: str | Path, split: str = "train", n: int | None = None,
                       seed: int = 0) -> Path:
    """Write `toy_problems(split, n, seed)` as a problems Parquet file (atomically)."""
    from restrl.problems.schema import write_problems_parquet

    return write_problems_parquet(toy_problems(split, n, seed), path)


def families_fingerprint() -> str:
    """One hash over every family and the split rule (for cache keys of derived models)."""
    text = json.dumps([f.fingerprint() for f in FAMILIES] + [TEST_FRACTION, N_CASES])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def reference_body(problem: Problem) -> str:
    """The reference continuation of a toy problem (its full reference minus init_code)."""
    reference = problem.meta["reference"]
    if not reference.startswith(problem.init_code):
        raise ValueError(f"{problem.problem_id}: reference does not start with init_code")
    return reference[len(problem.init_code):]
