"""Value model training and scoring (DESIGN.md step 7) on a tiny random Qwen2, all local."""

from __future__ import annotations

import math
import random

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import pyarrow as pa  # noqa: E402

from restrl.scoring import Scorer  # noqa: E402
from restrl.value.config import ValueModelConfig  # noqa: E402
from restrl.value.data import problem_batches, split_indices, value_text  # noqa: E402
from restrl.value.metrics import regression_metrics  # noqa: E402
from restrl.value.model import (  # noqa: E402
    INFO_FILE,
    ValueModelInfo,
    encode_texts,
    load_value_model,
    prepare_tokenizer,
)
from restrl.value.scorer import HFRewardModelScorer, ValueModelScorer  # noqa: E402
from restrl.value.train import ranking_loss, train_value_model, value_loss  # noqa: E402

GOOD = "return x + 1"
BAD = ("return x - 1", "return x * 2", "return x + 2", "return 1 + x - 2")


INIT = "def f(x):\n    "


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """Reward 1.0 when the body is `return x + 1`, else 0.0; questions vary, answers balanced.
    Like `value_data` rows: prompt = raw problem text, answer = full state (init_code too)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        good = i % 2 == 0
        prompt = f"Task {rng.randrange(100)}: write f(x) that adds one to x."
        answer = INIT + (GOOD if good else rng.choice(BAD))
        rows.append({"prompt": prompt, "answer": answer, "reward": 1.0 if good else 0.0,
                     "source": "terminal"})
    return rows


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and spinning threads on a shared 2-core
    machine make these tests several times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """A random tiny Qwen2 causal LM + a byte-level BPE tokenizer, saved like a hub model."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    corpus = [value_text(r["prompt"], r["answer"]) for r in synthetic_rows(200, seed=1)]
    corpus += ["def g(a, b):\n    return a * b + 3\n", "print('hello world')\n"] * 5
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<|endoftext|>",
                                        eos_token="<|im_end|>")
    config = Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, vocab_size=len(tokenizer),
                         max_position_embeddings=512, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-qwen2")
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def quick_config(rm_class: str, **overrides) -> ValueModelConfig:
    params = dict(rm_class=rm_class, learning_rate=1e-3, max_steps=2, batch_size_per_device=4,
                  eval_batch_size=16, eval_fraction=0.25, min_eval_rows=0, save_steps=0,
                  max_length=64, logging_steps=1)
    params.update(overrides)
    return ValueModelConfig(**params)


@pytest.fixture(scope="module")
def trained_scalar(tiny_base, tmp_path_factory):
    """transformers_scalar trained ~40 steps on the learnable synthetic task."""
    logs: list[tuple[int, dict]] = []
    config = quick_config("transformers_scalar", max_steps=40, batch_size_per_device=8)
    result = train_value_model(str(tiny_base), synthetic_rows(64), config,
                               tmp_path_factory.mktemp("vm-scalar"),
                               on_log=lambda step, values: logs.append((step, values)))
    return result, logs


def test_value_model_learns_synthetic_target_and_eval_mse_falls(trained_scalar):
    result, logs = trained_scalar
    m = result.metrics
    assert (result.n_train, result.n_eval) == (48, 16)
    assert m["after/mse"] < 0.5 * m["before/mse"], m
    assert m["after/loss"] < m["before/loss"], m
    assert m["after/accuracy"] >= m["before/accuracy"]
    assert -1.0 <= m["after/spearman"] <= 1.0
    # on_log forwards the Trainer's numeric logs: train losses and both evaluations
    assert any("loss" in values for _, values in logs)
    assert [step for step, values in logs if "eval_mse" in values] == [0, 40]


def test_trained_value_model_separates_good_from_bad_answers(trained_scalar):
    result, _ = trained_scalar
    scorer = ValueModelScorer(result.model_dir, batch_size=4, device="cpu")
    assert isinstance(scorer, Scorer)
    question = "Task 7: write f(x) that adds one to x."
    good, *bad = scorer.score([question] * 3,
                              [INIT + GOOD, INIT + "return x * 2", INIT + "return x - 1"])
    assert good > max(bad)


def test_scores_do_not_depend_on_batch_padding(trained_scalar):
    """Left padding + explicit position_ids: a text scores the same alone or padded in a batch."""
    result, _ = trained_scalar
    scorer = ValueModelScorer(result.model_dir, batch_size=8, device="cpu")
    scorer.loaded.info = ValueModelInfo("transformers_scalar", -1e9, 1e9, 64)  # no clipping
    prompts = ["Task 1: add one.", "A much longer problem text with many more tokens.\n" * 2]
    answers = [INIT + GOOD, INIT + "return x - 1"]
    together = scorer.score(prompts, answers)
    alone = [scorer.score([p], [a])[0] for p, a in zip(prompts, answers, strict=True)]
    assert together == pytest.approx(alone, abs=1e-4)


@pytest.mark.parametrize("rm_class", ["transformers_scalar", "standard_scalar",
                                      "transformers_prob"])
def test_each_value_model_class_trains_saves_and_reloads(
        rm_class, tiny_base, tmp_path):
    rows = pa.Table.from_pylist(synthetic_rows(16))  # a value_data table works like dicts
    config = quick_config(rm_class, min_rw=0.25, max_rw=0.75, save_steps=0.5)
    result = train_value_model(str(tiny_base), rows, config, tmp_path / rm_class)
    assert result.model_dir == tmp_path / rm_class / "final"
    checkpoint = tmp_path / rm_class / "checkpoints" / "checkpoint-1"  # save_steps 0.5 of 2
    weights = "value_head.safetensors" if rm_class == "standard_scalar" else "model.safetensors"
    assert (checkpoint / weights).is_file()
    info = ValueModelInfo.read(result.model_dir)
    assert (info.rm_class, info.min_rw, info.max_rw, info.max_length) == (
        rm_class, 0.25, 0.75, 64)
    assert {"before/mse", "after/mse", "after/accuracy", "after/spearman"} <= set(result.metrics)

    scorer = ValueModelScorer(result.model_dir, batch_size=3, device="cpu")
    prompts = [r["prompt"] for r in synthetic_rows(7)]
    answers = [r["answer"] for r in synthetic_rows(7)]
    scores = scorer.score(prompts, answers)
    assert len(scores) == 7
    assert scorer.score([], []) == []

    unclipped = load_value_model(result.model_dir, device="cpu")
    unclipped.info = ValueModelInfo(rm_class, -1e9, 1e9, 64)
    raw = unclipped.predict([value_text(p, a) for p, a in zip(prompts, answers, strict=True)])
    if rm_class == "transformers_prob":  # softmax[1]: a probability, never clipped
        assert scores == pytest.approx(raw, abs=1e-6)
        assert all(0.0 <= r <= 1.0 for r in raw)
    else:                                # scalar classes: clipped to [min_rw, max_rw]
        assert all(0.25 <= s <= 0.75 for s in scores)
        assert scores == pytest.approx([min(max(r, 0.25), 0.75) for r in raw], abs=1e-5)
    assert (result.model_dir / weights).is_file()


def test_left_truncation_keeps_the_end_of_a_long_text(tiny_base):
    from transformers import AutoTokenizer

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(str(tiny_base)))
    text = "# filler line\n" * 40 + "def f(x):\n    " + GOOD
    full = encode_texts(tokenizer, [text], max_length=10_000)[0]
    (kept,) = encode_texts(tokenizer, [text], max_length=12)
    assert len(full) > 12
    assert kept == full[-12:]
    assert tokenizer.decode(kept).endswith(GOOD)


def test_hf_reward_model_scorer_loads_a_saved_sequence_classifier(tiny_base, tmp_path):
    import torch
    from transformers import AutoConfig, AutoTokenizer, Qwen2ForSequenceClassification

    config = AutoConfig.from_pretrained(str(tiny_base), num_labels=1)
    torch.manual_seed(1)
    Qwen2ForSequenceClassification(config).save_pretrained(tmp_path / "orm")
    AutoTokenizer.from_pretrained(str(tiny_base)).save_pretrained(tmp_path / "orm")

    raw = HFRewardModelScorer(str(tmp_path / "orm"), batch_size=2, device="cpu")
    assert isinstance(raw, Scorer)
    prompts, answers = ["def f(x):\n    "] * 3, [GOOD, "return x - 1", "pass"]
    logits = raw.score(prompts, answers)
    assert len(logits) == 3 and all(math.isfinite(x) for x in logits)
    squashed = HFRewardModelScorer(str(tmp_path / "orm"), device="cpu", sigmoid=True)
    assert squashed.score(prompts, answers) == pytest.approx(
        [1 / (1 + math.exp(-x)) for x in logits], abs=1e-5)

    two = AutoConfig.from_pretrained(str(tiny_base), num_labels=2)
    Qwen2ForSequenceClassification(two).save_pretrained(tmp_path / "two")
    AutoTokenizer.from_pretrained(str(tiny_base)).save_pretrained(tmp_path / "two")
    with pytest.raises(ValueError, match="single-logit"):
        HFRewardModelScorer(str(tmp_path / "two"), device="cpu")


def test_value_model_dir_without_info_file_is_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match=INFO_FILE):
        ValueModelInfo.read(tmp_path)


def test_value_text_is_the_seed_input_format():
    assert value_text("Add one.", "def f(x):\n    return x + 1") == (
        "\n<prompt>\nAdd one.\n<answer>\ndef f(x):\n    return x + 1\n")


def test_split_holds_out_five_percent_with_at_least_100_rows():
    assert [len(split_indices(n, 0.05, 0, 100)[1]) for n in (4000, 1000, 201)] == [200, 100, 100]
    assert len(split_indices(1001, 0.05, 0, 0)[1]) == 51  # int(n * 0.95) train: test rounds up
    # Tiny data: the test split shrinks so train stays larger (the seed refuses n <= 200).
    assert [len(split_indices(n, 0.05, 0, 100)[1]) for n in (200, 16, 3, 2)] == [99, 7, 1, 0]
    assert split_indices(500, 0.0, 0, 100)[1] == []  # eval_fraction 0: no test split
    train, held = split_indices(300, 0.05, 3, 100)
    assert split_indices(300, 0.05, 3, 100) == (train, held)  # seeded
    assert sorted(train + held) == list(range(300)) and train != sorted(train)  # shuffled


def test_prob_loss_uses_soft_labels_and_class_weights():
    import torch

    logits = torch.tensor([[0.3, -1.2], [2.0, 0.5], [-0.4, 0.9]])
    rewards = torch.tensor([0.25, 1.0, 0.6])
    logp = torch.log_softmax(logits, dim=1)
    for w in (0.5, 0.8):
        terms = -((1 - w) * (1 - rewards) * logp[:, 0] + w * rewards * logp[:, 1])
        assert value_loss(logits, rewards, "transformers_prob", w).item() == pytest.approx(
            terms.mean().item(), rel=1e-6)


def test_scalar_losses_are_mean_mse_and_summed_mse_for_standard_scalar():
    import torch

    logits = torch.tensor([[0.5], [0.0], [1.5]])
    rewards = torch.tensor([1.0, 0.0, 1.0])
    squared = (0.25 + 0.0 + 0.25)
    assert value_loss(logits, rewards, "transformers_scalar").item() == pytest.approx(squared / 3)
    assert value_loss(logits, rewards, "standard_scalar").item() == pytest.approx(squared)


def test_ranking_term_counts_only_ordered_pairs_of_the_same_problem():
    import torch

    logits = torch.tensor([[0.9], [0.2], [0.4], [3.0], [-3.0]])
    labels = torch.tensor([1.0, 0.0, 0.5, 0.0, 1.0])
    problems = torch.tensor([7, 7, 7, 8, 9])  # rows 3 and 4 have no partner of their problem
    pairs = [(0, 1), (0, 2), (2, 1)]  # (higher target, lower target) within problem 7
    expected = sum(math.log1p(math.exp(-(logits[i, 0] - logits[j, 0]).item()))
                   for i, j in pairs) / len(pairs)
    for rm_class in ("transformers_scalar", "standard_scalar"):
        assert ranking_loss(logits, labels, problems, rm_class).item() == pytest.approx(expected)
    # the prob class ranks by its logit difference, the order of softmax[1]
    two = torch.cat([torch.zeros_like(logits), logits], dim=1)
    assert ranking_loss(two, labels, problems, "transformers_prob").item() == pytest.approx(
        expected)
    # no pair of one problem with different targets: zero, and still differentiable
    lone = logits.clone().requires_grad_()
    zero = ranking_loss(lone, labels, torch.arange(5), "transformers_scalar")
    zero.backward()
    assert zero.item() == 0.0 and lone.grad is not None


def test_problem_batches_keep_a_problem_s_rows_together():
    problems = [f"p{i % 5}" for i in range(40)]  # 8 rows each, interleaved
    order = problem_batches(problems, batch_size=4, seed=3)
    assert sorted(order) == list(range(40))
    chunks = [order[i:i + 4] for i in range(0, 40, 4)]
    assert all(len({problems[i] for i in chunk}) == 1 for chunk in chunks)
    assert problem_batches(problems, 4, seed=3) == order
    assert problem_batches(problems, 4, seed=4) != order


def test_ranking_weight_trains_on_problem_batches(tiny_base, tmp_path):
    """With ranking_weight on, the Trainer draws its micro-batches problem by problem and the
    loss gains the ranking term; the model still trains and saves."""
    rows = synthetic_rows(48)
    for i, row in enumerate(rows):  # 6 problems of 8 rows, half of them correct
        row["prompt"] = f"Task {i // 8}: write f(x) that adds one to x."
    seen: list[list[int]] = []

    from restrl.value import train as train_module

    original = train_module.ranking_loss

    def spy(logits, labels, problems, rm_class):  # noqa: ANN001, ANN202
        seen.append(problems.tolist())
        return original(logits, labels, problems, rm_class)

    train_module.ranking_loss = spy
    try:
        config = quick_config("transformers_scalar", max_steps=4, ranking_weight=1.0,
                              eval_fraction=0.0)
        result = train_value_model(str(tiny_base), rows, config, tmp_path / "vm")
    finally:
        train_module.ranking_loss = original
    assert (result.model_dir / "config.json").exists()
    assert len(seen) == 4  # one ranking term per training step
    assert all(len(set(batch)) == 1 for batch in seen), seen  # 8 rows a problem, batches of 4


def test_accuracy_counts_predictions_strictly_within_tolerance():
    m = regression_metrics([0.5, 0.5, 0.5, 0.5], [0.25, 0.3, 0.5, 1.0], test_tol=0.25)
    assert m["accuracy"] == pytest.approx(2 / 4)  # |0.5 - 0.25| = 0.25 is not < 0.25
    assert m["mse"] == pytest.approx((0.0625 + 0.04 + 0.0 + 0.25) / 4)
    assert m["spearman"] == 0.0  # constant predictions: undefined, reported as 0
    assert regression_metrics([0.1, 0.9], [0.0, 1.0], 0.05)["spearman"] == pytest.approx(1.0)


def test_default_config_is_the_readme_example():
    c = ValueModelConfig()
    assert (c.rm_class, c.max_length, c.learning_rate, c.epochs, c.batch_size_per_device,
            c.save_steps) == ("transformers_scalar", 2048, 1e-7, 2.0, 1, 0.5)
    assert (c.eval_fraction, c.min_eval_rows, c.test_tol, c.positive_weight) == (
        0.05, 100, 0.05, 0.5)
    assert (c.min_rw, c.max_rw, c.weight_decay, c.eval_batch_size) == (0.0, 1.0, 0.0, None)


@pytest.mark.parametrize("rm_class", ["transformers_scalar", "standard_scalar"])
def test_best_checkpoint_by_test_loss_is_kept(rm_class, tiny_base, tmp_path):
    """A large learning rate makes the test loss move up and down; the kept model is the
    checkpoint with the lowest one, not the last."""
    config = quick_config(rm_class, learning_rate=0.02, max_steps=6, save_steps=1,
                          batch_size_per_device=4)
    result = train_value_model(str(tiny_base), synthetic_rows(32), config, tmp_path / "vm")
    assert (result.n_train, result.n_eval) == (24, 8)
    before, *checkpoints, after = result.evaluations
    assert before[0] == 0 and [step for step, _ in checkpoints] == [1, 2, 3, 4, 5, 6]
    best_step, best = min(checkpoints, key=lambda item: item[1]["loss"])
    assert best_step != 6, "the run must not improve monotonically for this test to bite"
    assert result.best_checkpoint == str(tmp_path / "vm" / "checkpoints" /
                                         f"checkpoint-{best_step}")
    assert after[1]["loss"] == pytest.approx(best["loss"], rel=1e-4)
    assert result.metrics["after/loss"] == pytest.approx(best["loss"], rel=1e-4)
    # the saved model is the best one: reloaded, it reproduces the best checkpoint's test mse
    rows = synthetic_rows(32)
    _, held = split_indices(len(rows), config.eval_fraction, config.seed, config.min_eval_rows)
    scores = ValueModelScorer(result.model_dir, device="cpu").score(
        [rows[i]["prompt"] for i in held], [rows[i]["answer"] for i in held])
    targets = [rows[i]["reward"] for i in held]
    assert regression_metrics(scores, targets, 0.05)["mse"] == pytest.approx(
        best["mse"], rel=1e-4)


def test_hf_reward_model_sees_its_chat_template_or_the_vm_text(tiny_base, tmp_path):
    from transformers import AutoConfig, AutoTokenizer, Qwen2ForSequenceClassification

    from restrl.toy.tiny_model import CHAT_TEMPLATE

    config = AutoConfig.from_pretrained(str(tiny_base), num_labels=1)
    Qwen2ForSequenceClassification(config).save_pretrained(tmp_path / "plain")
    AutoTokenizer.from_pretrained(str(tiny_base)).save_pretrained(tmp_path / "plain")
    plain = HFRewardModelScorer(str(tmp_path / "plain"), device="cpu")
    assert plain.text("Add one.", INIT + GOOD) == value_text("Add one.", INIT + GOOD)

    Qwen2ForSequenceClassification(config).save_pretrained(tmp_path / "chat")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base))
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(tmp_path / "chat")
    chat = HFRewardModelScorer(str(tmp_path / "chat"), device="cpu")
    assert chat.text("Add one.", INIT + GOOD) == (
        f"<|im_start|>user\nAdd one.<|im_end|>\n<|im_start|>assistant\n{INIT + GOOD}"
        "<|im_end|>\n")
    assert len(chat.score(["Add one."] * 2, [INIT + GOOD, INIT + "pass"])) == 2


def test_prob_class_needs_rewards_in_the_unit_interval(tiny_base, tmp_path):
    rows = [dict(r, reward=2.0) for r in synthetic_rows(4)]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_value_model(str(tiny_base), rows, quick_config("transformers_prob"), tmp_path)


def test_info_file_from_an_older_version_still_loads(tmp_path):
    import json

    (tmp_path / INFO_FILE).write_text(json.dumps({
        "rm_class": "transformers_prob", "min_rw": 0.0, "max_rw": 1.0, "max_length": 64,
        "prob_threshold": 0.5, "base_model": "x"}))
    assert ValueModelInfo.read(tmp_path) == ValueModelInfo("transformers_prob", 0.0, 1.0, 64, "x")


def test_config_rejects_unknown_class_and_bad_ranges():
    with pytest.raises(ValueError, match="rm_class"):
        ValueModelConfig(rm_class="skywork")
    with pytest.raises(ValueError, match="min_rw"):
        ValueModelConfig(min_rw=1.0, max_rw=0.0)
    with pytest.raises(ValueError, match="eval_fraction"):
        ValueModelConfig(eval_fraction=1.0)
    with pytest.raises(ValueError, match="positive_weight"):
        ValueModelConfig(positive_weight=1.5)


def test_deepspeed_configs_leave_sizes_to_the_trainer():
    import json
    from pathlib import Path

    import restrl.training

    configs = Path(restrl.training.__file__).parent / "configs"
    for name, stage in (("zero2.json", 2), ("zero3.json", 3)):
        config = json.loads((configs / name).read_text())
        assert config["zero_optimization"]["stage"] == stage
        for key in ("train_batch_size", "train_micro_batch_size_per_gpu",
                    "gradient_accumulation_steps", "gradient_clipping"):
            assert config[key] == "auto"
        assert config["bf16"]["enabled"] == "auto"
        assert "optimizer" not in config and "scheduler" not in config  # the Trainer's own


@pytest.mark.parametrize("module", ["restrl.value.config", "restrl.training.grpo",
                                    "restrl.training.preference"])
def test_importing_a_trainer_config_loads_neither_torch_nor_transformers(module):
    """The configs are flow parameters and `--set` targets: importing them stays cheap."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (f"import sys, {module}; "
            "print([m for m in ('torch', 'transformers', 'trl') if m in sys.modules])")
    repo = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=repo, env={**os.environ, "PYTHONPATH": repo})
    assert out.stdout.strip() == "[]"



def test_a_new_head_on_a_causal_lm_is_one_info_line_not_a_load_report(tiny_base, caplog):
    """Building a VM from a causal LM leaves its head to initialise: expected, so restrl says
    so in one line instead of transformers' MISSING table."""
    import logging

    from restrl.value.model import build_value_model

    with caplog.at_level(logging.INFO):
        build_value_model(str(tiny_base), "transformers_scalar", pad_token_id=0)
    messages = [record.getMessage() for record in caplog.records]
    assert not any("LOAD REPORT" in m for m in messages), messages
    assert any("new head score.weight" in m for m in messages), messages
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
