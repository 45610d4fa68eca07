"""ReST-GRPO policy training: TRL's `GRPOTrainer` with the ReST reward computed in the sandbox.

The reward of a generated continuation c for a row (DESIGN.md step 4):

    reward = verify(partial_state + valid(c))            # fraction of tests / 1 or 0
           + symbol_reward            if c contains a stop string
           - trailing_penalty * len(text after the first stop string)

where valid(c) is c cut at the domain's first stop string.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from restrl.problems.model import Problem
from restrl.prompts import postprocess, trailing_text
from restrl.training.callbacks import forward_logs_callback, quiet_progress
from restrl.training.trainer_args import shared_trainer_kwargs

log = logging.getLogger("restrl.training.grpo")


@dataclass
class GRPOTrainConfig:
    """Everything ReST-GRPO training reads; mirrors the ReST-RL seed's `train_grpo.py` flags.

    Parameters that control the data:
        max_prompt_length (int, 1024): rows whose tokenized prompt is longer are dropped before
            training, and the count is logged (TRL 1.x has no `max_prompt_length`).
    Parameters that control generation:
        max_completion_length (int, 1024): tokens generated per continuation.
        num_generations (int, 8): the GRPO group size G for each prompt.
        temperature (float, 0.7): sampling temperature of the group.
        use_vllm (bool, False): generate with vLLM (GPU only; TRL's `use_vllm`).
    Parameters that control the reward (ReST-RL):
        symbol_reward (float, 1e-3): bonus when the continuation closes its code block.
        trailing_penalty (float, 1e-6): penalty per character after the stop string.
    Parameters that control training:
        learning_rate (float, 1e-7): the seed's value for 7B models; tiny models need ~1e-4.
        epochs (float, 1.0) and max_steps (int, -1: run the epochs).
        save_steps (float, 0.5): checkpoint every this many steps, or this fraction if < 1.
        batch_size_per_device (int, 2) and gradient_accumulation_steps (int, 1). The
            generation batch (batch size x accumulation) must be a multiple of num_generations.
        beta (float, 0.0): KL coefficient (TRL's default; >0 loads a reference model).
        loss_type (str, "dapo"): TRL's loss aggregation ("grpo", "bnpo", "dr_grpo", "dapo").
        deepspeed_config (str | None): path of a DeepSpeed JSON (ZeRO-2/3 configs ship in
            restrl/training/configs); used under `accelerate launch`.
        logging_steps (int, 1), seed (int, 0).
    """

    max_prompt_length: int = 1024
    max_completion_length: int = 1024
    num_generations: int = 8
    temperature: float = 0.7
    use_vllm: bool = False
    symbol_reward: float = 1e-3
    trailing_penalty: float = 1e-6
    learning_rate: float = 1e-7
    epochs: float = 1.0
    max_steps: int = -1
    save_steps: float = 0.5
    batch_size_per_device: int = 2
    gradient_accumulation_steps: int = 1
    beta: float = 0.0
    loss_type: str = "dapo"
    deepspeed_config: str | None = None
    logging_steps: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        generation_batch = self.batch_size_per_device * self.gradient_accumulation_steps
        if generation_batch % self.num_generations:
            raise ValueError(
                f"batch_size_per_device x gradient_accumulation_steps ({generation_batch}) must "
                f"be a multiple of num_generations ({self.num_generations})")


@dataclass
class RewardBreakdown:
    """The ReST reward of one continuation, with its parts (for logging)."""

    reward: float
    verified: float
    hit_stop: bool
    trailing_chars: int


def rest_rewards(problems: Sequence[Problem], partial_states: Sequence[str],
                 completions: Sequence[str], verify: Callable[[list[Problem], list[str]], list],
                 symbol_reward: float, trailing_penalty: float) -> list[RewardBreakdown]:
    """ReST rewards of a batch of continuations, verified together (one sandbox batch)."""
    programs, hits, trailing = [], [], []
    for problem, partial, completion in zip(problems, partial_states, completions, strict=True):
        code, hit_stop = postprocess(completion, problem.domain)
        programs.append(partial + code)
        hits.append(hit_stop)
        trailing.append(len(trailing_text(completion, problem.domain)))
    verdicts = verify(list(problems), programs)
    return [
        RewardBreakdown(
            reward=v.reward + (symbol_reward if hit else 0.0) - trailing_penalty * chars,
            verified=v.reward, hit_stop=hit, trailing_chars=chars)
        for v, hit, chars in zip(verdicts, hits, trailing, strict=True)
    ]


def make_reward_function(problems: Mapping[str, Problem], verifier: Any,
                         config: GRPOTrainConfig) -> Callable[..., list[float]]:
    """A TRL reward function; TRL passes the dataset's columns as keyword arguments."""

    def rest_reward(prompts: list[str], completions: list[str], problem_id: list[str],
                    partial_state: list[str], **kwargs: Any) -> list[float]:
        batch = [problems[pid] for pid in problem_id]
        scored = rest_rewards(batch, partial_state, completions, verifier.verify,
                              config.symbol_reward, config.trailing_penalty)
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            log_metric("rest/verified_reward", sum(s.verified for s in scored) / len(scored))
            log_metric("rest/hit_stop", sum(s.hit_stop for s in scored) / len(scored))
        return [s.reward for s in scored]

    rest_reward.__name__ = "rest_reward"
    return rest_reward


def filter_long_prompts(rows: list[dict[str, Any]], tokenizer: Any,
                        max_prompt_length: int) -> list[dict[str, Any]]:
    """Drop rows whose prompt exceeds max_prompt_length tokens (TRL 1.x no longer truncates)."""
    kept = [r for r in rows
            if len(tokenizer(r["prompt"], add_special_tokens=False)["input_ids"])
            <= max_prompt_length]
    if len(kept) < len(rows):
        log.warning("dropped %d of %d GRPO rows whose prompt is longer than %d tokens",
                    len(rows) - len(kept), len(rows), max_prompt_length)
    return kept


@dataclass
class GRPOResult:
    """Where the trained policy is and what training logged."""

    model_dir: Path
    rows_used: int
    rows_dropped_long: int
    log_history: list[dict[str, Any]]


def train_grpo(model_path: str, rows: list[dict[str, Any]], problems: Mapping[str, Problem],
               verifier: Any, config: GRPOTrainConfig, output_dir: str | Path,
               on_log: Callable[[int, dict[str, float]], None] | None = None) -> GRPOResult:
    """Train the policy at `model_path` on ReST-GRPO rows; save it to `output_dir/final`."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    output_dir = Path(output_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    usable = filter_long_prompts(rows, tokenizer, config.max_prompt_length)
    if not usable:
        raise ValueError("no GRPO rows left to train on (all prompts too long or none given)")
    dataset = Dataset.from_list([{"prompt": r["prompt"], "problem_id": r["problem_id"],
                                  "partial_state": r["partial_state"]} for r in usable])
    trl_config = GRPOConfig(
        **shared_trainer_kwargs(config, output_dir),
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        beta=config.beta,
        loss_type=config.loss_type,
        use_vllm=config.use_vllm,
        disable_tqdm=False,
    )

    model = AutoModelForCausalLM.from_pretrained(model_path)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=make_reward_function(problems, verifier, config),
        args=trl_config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[forward_logs_callback(on_log)],
    )
    quiet_progress(trainer)
    trainer.train()
    final = output_dir / "final"
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))
    return GRPOResult(final, len(usable), len(rows) - len(usable), trainer.state.log_history)


def config_params(config: GRPOTrainConfig) -> dict[str, Any]:
    return asdict(config)
