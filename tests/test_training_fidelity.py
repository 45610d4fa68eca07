"""Policy training (GRPO, DPO, SFT) behaves like the ReST-RL seed (REFERENCE.md sections 3-4)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from restrl.configs import undocumented
from restrl.problems.model import Problem
from restrl.training.grpo import (
    GRPOTrainConfig,
    check_group_batch,
    grpo_dataset,
    grpo_trl_config,
    make_reward_function,
    rest_rewards,
    train_grpo,
)
from restrl.training.preference import (
    DPO_COLUMNS,
    DPOTrainConfig,
    SFTTrainConfig,
    preference_dataset,
    train_dpo,
    train_sft,
)
from restrl.training.settings import TrainerSettings
from restrl.training.trainer_args import (
    checkpointing_kwargs,
    num_processes,
    shared_trainer_kwargs,
    truncate_prompts_left,
)
from restrl.value.config import ValueModelConfig


@pytest.fixture(scope="module")
def tiny():
    from restrl.toy.tiny_model import tiny_model_path

    return str(tiny_model_path())


@pytest.fixture(scope="module")
def tokenizer(tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny)


class MatchVerifier:
    """Reward 1 when the program contains the problem's `tests` text, else 0; records calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Problem, str]] = []

    def verify(self, problems, programs):
        self.calls.extend(zip(problems, programs, strict=True))
        return [SimpleNamespace(reward=1.0 if p.tests in prog else 0.0)
                for p, prog in zip(problems, programs, strict=True)]


class SpreadVerifier(MatchVerifier):
    """Rewards 0, 1/4, 2/4, 3/4, 0, ... in call order: every group has a spread (the tiny model
    may sample one program four times), so GRPO's advantages, and its update, are not zero."""

    def verify(self, problems, programs):
        start = len(self.calls)
        self.calls.extend(zip(problems, programs, strict=True))
        return [SimpleNamespace(reward=(start + i) % 4 / 4) for i in range(len(programs))]


def problem(domain: str, pid: str, tests: str) -> Problem:
    return Problem(problem_id=pid, domain=domain, prompt="q", init_code="", tests=tests)


# ----------------------------------------------------------------------------- GRPO config


def test_grpo_defaults_are_the_originals():
    c = GRPOTrainConfig()
    assert (c.num_generations, c.temperature, c.max_prompt_length, c.max_completion_length) \
        == (8, 0.7, 1024, 1024)
    assert (c.epochs, c.save_steps, c.shuffle_seed, c.seed) == (1.0, 0.5, 42, 42)
    assert (c.beta, c.loss_type, c.scale_rewards, c.epsilon) == (0.04, "bnpo", True, 0.2)
    assert (c.learning_rate, c.batch_size_per_device, c.gradient_accumulation_steps) \
        == (1e-7, 2, 1)
    assert (c.symbol_reward, c.trailing_penalty, c.gradient_checkpointing) == (1e-3, 1e-6, False)


def test_grpo_trl_config_carries_the_originals_loss_settings(tmp_path):
    args = grpo_trl_config(GRPOTrainConfig(batch_size_per_device=8), tmp_path, processes=1)
    assert (args.beta, args.loss_type, args.scale_rewards, args.epsilon) \
        == (0.04, "bnpo", "group", 0.2)
    assert (args.num_generations, args.temperature, args.max_completion_length) == (8, 0.7, 1024)
    assert (args.learning_rate, args.num_train_epochs, args.save_steps, args.seed) \
        == (1e-7, 1.0, 0.5, 42)
    assert args.use_bias_correction_kl is False and args.gradient_checkpointing is False
    assert args.weight_decay == 0.0 and args.shuffle_dataset


@pytest.mark.parametrize("config_class", [GRPOTrainConfig, DPOTrainConfig, SFTTrainConfig,
                                          ValueModelConfig])
def test_every_training_config_field_has_help_text(config_class):
    assert undocumented(config_class) == []


@pytest.mark.parametrize("config_class", [GRPOTrainConfig, DPOTrainConfig, SFTTrainConfig,
                                          ValueModelConfig])
def test_every_trainer_reads_the_shared_trainer_settings(config_class, tmp_path):
    assert issubclass(config_class, TrainerSettings)
    config = config_class(seed=7, save_steps=0, gradient_checkpointing=True)
    kwargs = shared_trainer_kwargs(config, tmp_path)
    assert (kwargs["seed"], kwargs["save_strategy"], kwargs["output_dir"]) == (
        7, "no", str(tmp_path / "checkpoints"))
    assert kwargs.items() >= checkpointing_kwargs(True).items()  # under this version's name


def test_a_retuned_default_keeps_the_shared_help_and_limits():
    shared = TrainerSettings.__pydantic_fields__["batch_size_per_device"]
    grpo = GRPOTrainConfig.__pydantic_fields__["batch_size_per_device"]
    assert (shared.default, grpo.default) == (4, 2)
    assert grpo.description.startswith(shared.description) and "multiple of num_generations" \
        in grpo.description
    with pytest.raises(ValueError, match="batch_size_per_device"):
        GRPOTrainConfig(batch_size_per_device=0)


def test_grpo_default_config_constructs():
    GRPOTrainConfig()  # batch 2 x accumulation 1 is checked at training start, not here


def test_group_batch_check_passes_with_four_processes():
    check_group_batch(GRPOTrainConfig(), processes=4)  # 2 x 4 x 1 = 8


def test_group_batch_check_fails_clearly_on_one_process():
    with pytest.raises(ValueError) as error:
        check_group_batch(GRPOTrainConfig(), processes=1)
    message = str(error.value)
    assert "= 2 is not a multiple of num_generations (8)" in message
    assert "gradient_accumulation_steps to 4" in message and "run 4 processes" in message


def test_group_batch_check_runs_before_trl_builds_its_config(tmp_path):
    with pytest.raises(ValueError, match="gradient_accumulation_steps to 4"):
        grpo_trl_config(GRPOTrainConfig(), tmp_path, processes=1)


def test_number_of_processes_comes_from_world_size(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert num_processes() == 4
    monkeypatch.delenv("WORLD_SIZE")
    assert num_processes() == 1


# ----------------------------------------------------------------------------- data


def test_long_prompts_are_cut_from_the_left_not_dropped(tokenizer, caplog):
    long = "".join(f"line {i}: x = {i}\n" for i in range(60)) + "```python\n"
    rows = [{"prompt": long, "problem_id": "a"}, {"prompt": "short\n", "problem_id": "b"}]
    with caplog.at_level(logging.WARNING, logger="restrl.training"):
        out, cut = truncate_prompts_left(rows, tokenizer, 24)
    assert cut == 1 and len(out) == 2 and "cut 1 of 2 prompts" in caplog.text
    ids = tokenizer(out[0]["prompt"], add_special_tokens=False)["input_ids"]
    assert 20 <= len(ids) <= 24
    assert long.endswith(out[0]["prompt"]) and out[0]["prompt"].endswith("```python\n")
    assert out[1] == rows[1] and out[0]["problem_id"] == "a"


def test_grpo_data_is_shuffled_with_seed_42():
    from datasets import Dataset

    rows = [{"prompt": f"p{i}", "domain": "toy", "problem_id": str(i), "partial_state": "",
             "source": "base"} for i in range(20)]
    ids = grpo_dataset(rows, 42)["problem_id"]
    assert ids == Dataset.from_list(rows).shuffle(seed=42)["problem_id"]
    assert ids != [r["problem_id"] for r in rows]
    assert grpo_dataset(rows, None)["problem_id"] == [r["problem_id"] for r in rows]
    assert set(grpo_dataset(rows, 42).column_names) == {"prompt", "domain", "problem_id",
                                                          "partial_state"}


def test_dpo_rows_are_shuffled_with_seed_42_and_long_prompts_cut_from_the_left(tokenizer):
    from datasets import Dataset

    long = "".join(f"line {i}\n" for i in range(80)) + "```python\n"
    rows = [{"prompt": long if i == 3 else f"p{i}\n", "chosen": f"c{i}```", "rejected": "r```",
             "problem_id": str(i)} for i in range(12)]
    dataset, cut = preference_dataset(rows, DPO_COLUMNS, tokenizer, 16, shuffle_seed=42)
    assert cut == 1 and dataset.column_names == list(DPO_COLUMNS)
    assert dataset["chosen"] == Dataset.from_list(rows).shuffle(seed=42)["chosen"]
    assert long.endswith(dataset[dataset["chosen"].index("c3```")]["prompt"])


def test_dpo_and_sft_defaults_are_the_originals():
    dpo, sft = DPOTrainConfig(), SFTTrainConfig()
    assert (dpo.beta, dpo.loss_type, dpo.max_prompt_length, dpo.max_length) \
        == (0.1, "sigmoid", 1024, 2048)
    for c in (dpo, sft):
        assert (c.learning_rate, c.epochs, c.batch_size_per_device, c.save_steps, c.seed,
                c.shuffle_seed) == (2e-5, 1.0, 4, 0.5, 42, 42)
    assert sft.max_length == 2048 and sft.max_prompt_length is None


# ----------------------------------------------------------------------------- reward


def test_rest_reward_adds_symbol_bonus_and_subtracts_trailing_penalty():
    verifier = MatchVerifier()
    p = problem("toy", "1", tests="y = 2")
    scored = rest_rewards([p, p], ["x = 1\n", "x = 1\n"], ["y = 2\n```\nabc", "y = 2\n"],
                          verifier.verify, symbol_reward=1e-3, trailing_penalty=1e-6)
    assert [prog for _, prog in verifier.calls] == ["x = 1\ny = 2\n", "x = 1\ny = 2\n"]
    assert scored[0].hit_stop and scored[0].trailing_chars == 4
    assert scored[0].reward == pytest.approx(1.0 + 1e-3 - 4e-6)
    assert not scored[1].hit_stop and scored[1].reward == 1.0


def test_reward_tells_apart_problems_sharing_an_id_across_domains():
    apps, ds1000 = problem("apps", "0", tests="APPS_OK"), problem("ds1000", "0", tests="DS_OK")
    verifier = MatchVerifier()
    reward = make_reward_function({apps.key: apps, ds1000.key: ds1000}, verifier,
                                  GRPOTrainConfig(symbol_reward=0.0, trailing_penalty=0.0))
    rewards = reward(prompts=["", "", "", ""], completions=["APPS_OK", "APPS_OK", "DS_OK", "DS_OK"],
                     domain=["apps", "ds1000", "apps", "ds1000"], problem_id=["0"] * 4,
                     partial_state=[""] * 4)
    assert rewards == [1.0, 0.0, 0.0, 1.0]
    assert [p.domain for p, _ in verifier.calls] == ["apps", "ds1000", "apps", "ds1000"]


def test_reward_function_refuses_problems_keyed_by_id_alone():
    p = problem("apps", "0", tests="t")
    with pytest.raises(ValueError, match=r"keyed by \(domain, problem_id\)"):
        make_reward_function({"0": p}, MatchVerifier(), GRPOTrainConfig())


# ----------------------------------------------------------------------------- training


def weights_changed(base: str, trained) -> bool:
    import torch
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(base).state_dict()
    after = AutoModelForCausalLM.from_pretrained(trained).state_dict()
    assert before.keys() == after.keys()
    return any(not torch.equal(before[k].float(), after[k].float()) for k in before)


def toy_rows(n: int = 4) -> list[dict]:
    from restrl.prompts import format_prompt
    from restrl.toy.tasks import toy_problems

    return [{"problem": p, "prompt": format_prompt(p)} for p in toy_problems("train", n=n)]


def test_train_grpo_trains_and_saves_a_loadable_policy(tiny, tmp_path):
    rows = [{"problem_id": r["problem"].problem_id, "domain": r["problem"].domain,
             "prompt": r["prompt"], "init_state": r["problem"].init_code,
             "partial_state": r["problem"].init_code, "prefix_lines": 0, "source": "base"}
            for r in toy_rows(2)]
    verifier = SpreadVerifier()
    config = GRPOTrainConfig(num_generations=4, batch_size_per_device=4, max_completion_length=12,
                             max_prompt_length=64, max_steps=1, save_steps=0,
                             learning_rate=1e-2, temperature=1.0)
    logs = []
    result = train_grpo(tiny, rows, [r["problem"] for r in toy_rows(2)], verifier, config,
                        tmp_path, on_log=lambda step, values: logs.append(values))
    assert result.model_dir == tmp_path / "final" and result.rows_used == 2
    assert len(verifier.calls) >= 4 and logs
    assert weights_changed(tiny, result.model_dir)
    assert (result.model_dir / "tokenizer_config.json").exists()


def test_train_dpo_saves_a_loadable_model_whose_weights_changed(tiny, tmp_path):
    rows = [{"problem_id": r["problem"].problem_id, "domain": "toy", "prompt": r["prompt"],
             "chosen": "    return x\n```", "rejected": "    pass\n```",
             "chosen_reward": 1.0, "rejected_reward": 0.0} for r in toy_rows(4)]
    config = DPOTrainConfig(max_steps=2, batch_size_per_device=2, save_steps=0,
                            learning_rate=1e-3, max_length=256)
    result = train_dpo(tiny, rows, config, tmp_path)
    assert result.model_dir == tmp_path / "final" and result.rows_used == 4
    assert any("loss" in entry for entry in result.log_history)
    assert weights_changed(tiny, result.model_dir)
    assert (result.model_dir / "tokenizer_config.json").exists()


def test_train_sft_saves_a_loadable_model_whose_weights_changed(tiny, tmp_path):
    import pyarrow as pa

    from restrl.artifacts.schemas import SFT_DATA

    rows = [{"problem_id": r["problem"].problem_id, "domain": "toy", "prompt": r["prompt"],
             "completion": "    return x\n```", "reward": 1.0} for r in toy_rows(4)]
    config = SFTTrainConfig(max_steps=2, batch_size_per_device=2, save_steps=0,
                            learning_rate=1e-3, max_length=256, max_prompt_length=200)
    result = train_sft(tiny, pa.Table.from_pylist(rows, schema=SFT_DATA), config, tmp_path)
    assert result.model_dir == tmp_path / "final" and result.rows_used == 4
    assert any("loss" in entry for entry in result.log_history)
    assert weights_changed(tiny, result.model_dir)
