"""The embedded tiny model: tokenizer, loading like a hub model, cache and atomic builds.

Fast tests build a miniature variant (a few steps, small corpus); the `slow` ones use the real
cached model (`tiny_model_path()`, built once per machine, under $RESTRL_CACHE or ~/.cache).
"""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from restrl.prompts import format_prompt  # noqa: E402
from restrl.toy import tiny_model as tm  # noqa: E402
from restrl.toy import toy_problems  # noqa: E402

CODE = (
    "def count_vowels(s):\n"
    "    count = 0\n"
    "    for ch in s:\n"
    "        if ch in \"aeiou\":\n"
    "            count += 1\n"
    "    return count * 3 + 7  # ünïcode, tabs\t and emoji 🐍\n"
)


def _mini_recipe() -> dict:
    recipe = copy.deepcopy(tm.RECIPE)
    recipe["tokenizer"].update(vocab_size=400, stdlib_bytes=20_000)
    recipe["model"].update(num_hidden_layers=1, hidden_size=32, intermediate_size=64,
                           num_attention_heads=2, num_key_value_heads=1)
    recipe["train"].update(n_train=60, n_calib=4, batch_size=4)
    recipe["eval"].update(max_new_tokens=8)
    return recipe


@pytest.fixture(scope="module")
def mini_model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mini") / "model"
    return tm.build_tiny_model(out, steps=3, progress=False, evaluate=False,
                               recipe=_mini_recipe())


def test_tokenizer_round_trips_code_and_has_chatml() -> None:
    texts = [CODE * 3] + ["".join(tm.sft_text(p)) for p in toy_problems("train", 30)]
    tokenizer = tm.build_tokenizer(texts, vocab_size=400)
    assert tokenizer.decode(tokenizer(CODE)["input_ids"]) == CODE
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.eos_token_id != tokenizer.pad_token_id
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")  # special, one token
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in ids


def test_saved_tokenizer_loads_back_identical_through_auto_tokenizer(tmp_path) -> None:
    from transformers import Qwen2Config

    texts = ["".join(tm.sft_text(p)) for p in toy_problems("train", 40)] + [CODE]
    tokenizer = tm.build_tokenizer(texts, vocab_size=400)
    tokenizer.save_pretrained(tmp_path)
    Qwen2Config(vocab_size=len(tokenizer)).save_pretrained(tmp_path)  # a qwen2 model directory
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.padding_side == "left" and loaded.chat_template == tokenizer.chat_template
    for text in texts + ["<|im_start|>user\nx = 12345<|im_end|>\n"]:
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_sft_text_matches_the_prompt_formatter() -> None:
    problem = toy_problems("train", 1)[0]
    tokenizer = tm.build_tokenizer(["".join(tm.sft_text(problem))] * 5, vocab_size=300)
    prompt, completion = tm.sft_text(problem, tokenizer)
    assert prompt == format_prompt(problem, tokenizer)
    assert prompt == tm.sft_text(problem)[0]  # the stand-in renders the same template
    assert completion.endswith("```") and problem.init_code + completion[:-3] == \
        problem.meta["reference"]


def test_mini_build_loads_like_a_hub_model_and_generates(mini_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(mini_model_dir)
    model = AutoModelForCausalLM.from_pretrained(mini_model_dir)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    batch = tokenizer([format_prompt(p, tokenizer) for p in toy_problems("test", 2)],
                      return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    width = batch["input_ids"].shape[1]
    assert out.shape[0] == 2 and width < out.shape[1] <= width + 4
    info = json.loads((mini_model_dir / tm.INFO_FILE).read_text())
    assert info["steps"] == 3 and info["recipe"]["model"]["hidden_size"] == 32



def test_generation_gives_the_pipelines_completion_rows_and_keeps_the_training_mode(
        mini_model_dir: Path) -> None:
    import pyarrow as pa

    from restrl.artifacts.schemas import COMPLETIONS

    tokenizer = AutoTokenizer.from_pretrained(mini_model_dir)
    model = AutoModelForCausalLM.from_pretrained(mini_model_dir).train()
    problems = toy_problems("test", 3)
    rows = tm.generate_programs(model, tokenizer, problems, temperature=0.7, samples=2,
                                max_new_tokens=4)
    pa.Table.from_pylist(rows, schema=COMPLETIONS)  # the sampling step's table, as is
    assert [(r["problem_id"], r["sample_idx"]) for r in rows] == [
        (p.problem_id, i) for p in problems for i in range(2)]
    assert model.training


def test_pass_at_1_is_the_mean_over_problems_of_strict_verdicts(mini_model_dir: Path) -> None:
    class FirstProblemPasses:
        def verify(self, problems, programs):  # noqa: ANN001, ANN202
            return [SimpleNamespace(strict=p.problem_id == first) for p in problems]

    tokenizer = AutoTokenizer.from_pretrained(mini_model_dir)
    model = AutoModelForCausalLM.from_pretrained(mini_model_dir)
    problems = toy_problems("test", 4)
    first = problems[0].problem_id
    rate = tm.evaluate_pass_at_1(model, tokenizer, problems, temperature=0.7, samples=2,
                                 max_new_tokens=4, verifier=FirstProblemPasses())
    assert rate == 0.25

def test_build_failure_leaves_nothing_that_looks_complete(tmp_path, monkeypatch) -> None:
    def boom(out: Path, **kwargs) -> None:
        (out / "config.json").write_text("{}")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(tm, "_build_into", boom)
    with pytest.raises(RuntimeError):
        tm.build_tiny_model(tmp_path / "m", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_build_refuses_to_overwrite_a_foreign_directory(tmp_path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        tm.build_tiny_model(tmp_path / "m", progress=False)


def test_tiny_model_path_builds_once_under_a_lock(tmp_path, monkeypatch) -> None:
    calls = []

    def fake_build(out: Path, **kwargs) -> None:
        calls.append(out)
        (out / tm.INFO_FILE).write_text("{}")

    monkeypatch.setattr(tm, "_build_into", fake_build)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(tm.tiny_model_path(tmp_path)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    expected = tmp_path / "tiny-model" / tm.recipe_hash()
    assert set(results) == {expected} and tm.is_complete(expected)
    monkeypatch.setenv("RESTRL_CACHE", str(tmp_path))
    assert tm.tiny_model_path() == expected and len(calls) == 1


def test_recipe_hash_depends_on_recipe_and_seed() -> None:
    other = copy.deepcopy(tm.RECIPE)
    other["train"]["lr"] = 1.0
    assert tm.recipe_hash() == tm.recipe_hash(tm.RECIPE, 0)
    assert tm.recipe_hash(other) != tm.recipe_hash()
    assert tm.recipe_hash(seed=1) != tm.recipe_hash()


# ----------------------------------------------------------------------------- the real model


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    return tm.tiny_model_path()


@pytest.mark.slow
def test_tiny_model_loads_and_solves_some_but_not_all_test_problems(tiny_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    info = tm.tiny_model_info(tiny_dir)
    assert 0.1 <= info["test"]["greedy_pass_at_1"] <= 0.7, info["test"]
    # Re-measure on a slice of the test split: clearly above zero and below one.
    problems = toy_problems("test", 45)
    rate = tm.evaluate_pass_at_1(model, tokenizer, problems)
    assert 0.05 <= rate <= 0.8
