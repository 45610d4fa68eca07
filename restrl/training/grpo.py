"""ReST-GRPO policy training: TRL's `GRPOTrainer` with the ReST reward computed in the sandbox.

The reward of a generated continuation c for a row (REFERENCE.md section 4):

    reward = verify(partial_state + valid(c))            # fraction of tests / 1 or 0
           + symbol_reward            if c contains a stop string
           - trailing_penalty * len(text after the first stop string)

where valid(c) is c cut at the domain's first stop string. A row names its problem by
(domain, problem_id): APPS and DS1000 ids are both small integers.

The defaults are the ReST-RL seed's (`models/train_grpo.py`, `models/run_grpo.sh`, TRL 0.18.2's
defaults for what the seed leaves unset); where restrl differs, `GRPOTrainConfig` says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from restrl.configs import config
from restrl.problems.model import Problem, ProblemKey
from restrl.prompts import postprocess, trailing_text
from restrl.training.callbacks import forward_logs_callback
from restrl.training.checkpoints import train_and_save
from restrl.training.settings import TrainerSettings, retuned
from restrl.training.trainer_args import (
    checkpoint_dtype,
    load_dtype,
    num_processes,
    shared_trainer_kwargs,
    truncate_prompts_left,
)

log = logging.getLogger("restrl.training.grpo")


@config
class GRPOTrainConfig(TrainerSettings):
    """Everything ReST-GRPO training reads. Defaults: the seed's `train_grpo.py` run as its
    README / `run_grpo.sh` launches it (under DeepSpeed ZeRO-2:
    `deepspeed_config=restrl/training/configs/zero2.json`), with TRL 0.18.2's defaults for what
    the seed leaves unset."""

    # --- data ---
    max_prompt_length: int = Field(
        1024, ge=1, description="Prompts longer than this many tokens are cut from the LEFT "
        "(their last max_prompt_length tokens are kept), as TRL 0.18.2 did for the seed; the "
        "count is logged. TRL 1.x has no such option, so restrl cuts the text itself.")
    shuffle_seed: int | None = Field(
        42, description="The rows are shuffled with this seed before training (the seed's "
        "`train_dataset.shuffle(seed=42)`); None keeps their order.")

    # --- generation ---
    max_completion_length: int = Field(1024, description="Tokens generated per continuation.")
    num_generations: int = Field(8, ge=2, description="The GRPO group size G for each prompt "
                                 "(at least 2: GRPO compares a group).")
    temperature: float = Field(0.7, description="Sampling temperature of the group.")

    # --- vLLM generation (GPU only) ---
    use_vllm: bool = Field(
        False, description="Generate the groups with vLLM instead of transformers (GPU only; "
        "TRL's `use_vllm`). TRL then needs vLLM importable in the TRAINING process too (its "
        "weight sync uses vLLM's NCCL helpers), with a version TRL 1.16 supports "
        "(VLLM_VERSIONS): run `restrl train grpo` from the vLLM environment (/opt/vllm/bin/restrl "
        "in docker/Dockerfile.gpu), not from a Prefect flow; the check runs at training start "
        "(`check_vllm_for_trl`). docs/gpu.md has the commands.")
    vllm_mode: Literal["server", "colocate"] = Field(
        "server", description="\"server\" (TRL 0.18.2's mode, which the seed used): a "
        "`trl vllm-serve --model M` process on GPUs of its own samples, and rank 0 sends it the "
        "new weights after each step. \"colocate\": a vLLM engine inside every training "
        "process, sharing its GPU.")
    vllm_server_base_url: str = Field(
        "http://127.0.0.1:8000", description="The `trl vllm-serve` server (server mode; not "
        "`vllm serve`, which has no weight-update endpoints).")
    vllm_server_timeout: float = Field(240.0, description="Seconds to wait for that server at "
                                       "the start.")
    vllm_gpu_memory_utilization: float = Field(
        0.3, gt=0, le=1, description="Colocate mode: the share of each GPU vLLM takes (TRL's "
        "default). In server mode pass `--gpu_memory_utilization` to `trl vllm-serve` instead.")
    vllm_max_model_length: int | None = Field(
        None, description="Colocate mode: vLLM's context length; None is the model's own (a 7B "
        "Qwen's 32k reserves much KV cache: set ~2048). In server mode pass `--max_model_len` "
        "to `trl vllm-serve`.")
    vllm_tensor_parallel_size: int = Field(
        1, ge=1, description="Colocate mode: GPUs one vLLM engine spans; it must divide the "
        "number of processes. In server mode pass `--tensor_parallel_size`.")

    # --- reward (ReST-RL) ---
    symbol_reward: float = Field(1e-3, description="Bonus when the continuation closes its code "
                                 "block.")
    trailing_penalty: float = Field(1e-6, description="Penalty per character after the stop "
                                    "string.")

    # --- loss (TRL 0.18.2's defaults, which the seed used) ---
    beta: float = Field(
        0.04, description="KL coefficient; > 0 loads a reference model. TRL 1.x defaults to 0. "
        "The KL gradient is TRL 0.18.2's (no DeepSeek-V3.2 importance-ratio correction).")
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = Field(
        "bnpo", description="\"bnpo\": token losses averaged over the local batch's completion "
        "tokens. TRL 1.x defaults to \"dapo\".")
    epsilon: float = Field(0.2, description="PPO clip range of the importance ratio.")
    scale_rewards: bool = Field(True, description="Divide each group's advantages by its reward "
                                "std.")

    # --- training (TrainerSettings, with the README example's values) ---
    learning_rate: float = retuned(
        "learning_rate", 1e-7, "GRPO: 1e-7, the seed's README / run_grpo.sh value for 7B models "
        "(train_grpo.py's own default is 1e-6); tiny models need ~1e-4.")
    batch_size_per_device: int = retuned(
        "batch_size_per_device", 2, "GRPO: 2, the seed's README example (train_grpo.py's own "
        "default is 4). The effective batch, per device x processes x accumulation, must be a "
        "multiple of num_generations; it is checked when training starts, where the number of "
        "processes is known (2 per device needs 4 processes, or accumulation 4 on one).")

    @classmethod
    def toy(cls) -> GRPOTrainConfig:
        """The CPU demo's ReST-GRPO on the tiny model: lr 5e-5, the best of 5e-5 / 1e-4 / 2e-4
        on the toy VALIDATION split (pass@1 0.331 / 0.312 / 0.247 from 0.290; README), beta 0
        and "dapo"; a checkpoint each quarter, to resume from."""
        return cls(max_prompt_length=512, max_completion_length=96, num_generations=8,
                   temperature=1.0, learning_rate=5e-5, epochs=1.0, save_steps=0.25,
                   batch_size_per_device=16, gradient_accumulation_steps=1, beta=0.0,
                   loss_type="dapo")


# vLLM releases TRL 1.16 supports (trl/import_utils.py: 0.22.0-0.31.0); its server mode also
# needs >= 0.28 for the weight-transfer helpers it imports. docker/Dockerfile.gpu pins 0.31.0.
VLLM_VERSIONS = ("0.28.0", "0.31.0")


def check_vllm_for_trl(installed: str | None) -> None:
    """Raise, saying what to do, unless vLLM `installed` (its version, None when absent) can
    drive TRL 1.16's GRPO generation from this process."""
    from packaging.version import Version

    low, high = VLLM_VERSIONS
    where = ("run `restrl train grpo` from the vLLM environment (/opt/vllm/bin/restrl in "
             "docker/Dockerfile.gpu; docs/gpu.md), or set use_vllm=false")
    if installed is None:
        raise ImportError("use_vllm=true: TRL imports vLLM in the training process itself (its "
                          "weight sync uses vLLM's NCCL helpers) and vLLM is not installed in "
                          f"this environment (vLLM and Prefect cannot share one): {where}")
    if not Version(low) <= Version(Version(installed).base_version) <= Version(high):
        raise ImportError(f"use_vllm=true: TRL 1.16 supports vLLM {low}-{high}, this "
                          f"environment has vLLM {installed}: pip install vllm=={high}")


def installed_vllm() -> str | None:
    """The installed vLLM version, or None (read from package metadata: nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vllm")
    except PackageNotFoundError:
        return None


def check_group_batch(config: GRPOTrainConfig, processes: int) -> None:
    """Raise unless the effective batch (per device x processes x accumulation) holds whole
    groups of num_generations completions."""
    per_step = config.batch_size_per_device * processes
    effective = per_step * config.gradient_accumulation_steps
    if effective % config.num_generations == 0:
        return
    fixes = []
    for accumulation in range(config.gradient_accumulation_steps + 1,
                              config.gradient_accumulation_steps + config.num_generations + 1):
        if per_step * accumulation % config.num_generations == 0:
            fixes.append(f"set gradient_accumulation_steps to {accumulation}")
            break
    for more in range(processes + 1, processes + config.num_generations + 1):
        if config.batch_size_per_device * more * config.gradient_accumulation_steps \
                % config.num_generations == 0:
            fixes.append(f"run {more} processes (accelerate launch --num_processes {more})")
            break
    fixes.append("or change batch_size_per_device / num_generations")
    raise ValueError(
        f"GRPO needs whole groups: batch_size_per_device ({config.batch_size_per_device}) x "
        f"processes ({processes}) x gradient_accumulation_steps "
        f"({config.gradient_accumulation_steps}) = {effective} is not a multiple of "
        f"num_generations ({config.num_generations}). To fix: " + ", ".join(fixes) + ".")


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
    """ReST rewards of a batch of continuations, verified together (one sandbox batch):
    verify(partial_state + c cut at its first stop) + symbol_reward if c has a stop
    - trailing_penalty x characters after that stop."""
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


def problem_index(problems: Mapping[ProblemKey, Problem] | Iterable[Problem]
                  ) -> dict[ProblemKey, Problem]:
    """Problems by (domain, problem_id): a mapping so keyed is checked, an iterable is indexed."""
    if not isinstance(problems, Mapping):
        problems = {p.key: p for p in problems}
    for key, problem in problems.items():
        if key != problem.key:
            raise ValueError(f"problems must be keyed by (domain, problem_id); key {key!r} holds "
                             f"{problem.key!r}")
    return dict(problems)


def make_reward_function(problems: Mapping[ProblemKey, Problem] | Iterable[Problem],
                         verifier: Any, config: GRPOTrainConfig) -> Callable[..., list[float]]:
    """A TRL reward function; TRL passes the dataset's columns (domain, problem_id,
    partial_state) as keyword arguments."""
    index = problem_index(problems)

    def rest_reward(prompts: list[str], completions: list[str], domain: list[str],
                    problem_id: list[str], partial_state: list[str], **kwargs: Any) -> list[float]:
        keys = list(zip(domain, problem_id, strict=True))
        missing = sorted({key for key in keys if key not in index})
        if missing:
            raise KeyError(f"GRPO rows name problems that were not given: {missing[:5]}")
        batch = [index[key] for key in keys]
        scored = rest_rewards(batch, partial_state, completions, verifier.verify,
                              config.symbol_reward, config.trailing_penalty)
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            log_metric("rest/verified_reward", sum(s.verified for s in scored) / len(scored))
            log_metric("rest/hit_stop", sum(s.hit_stop for s in scored) / len(scored))
        return [s.reward for s in scored]

    rest_reward.__name__ = "rest_reward"
    return rest_reward


GRPO_COLUMNS = ("prompt", "domain", "problem_id", "partial_state")


def grpo_dataset(rows: Sequence[Mapping[str, Any]], shuffle_seed: int | None) -> Any:
    """The training `datasets.Dataset` (the columns the reward reads), shuffled like the seed."""
    from datasets import Dataset

    missing = [c for c in GRPO_COLUMNS if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"GRPO rows lack the columns {missing} (GRPO_DATA has them)")
    dataset = Dataset.from_list([{c: r[c] for c in GRPO_COLUMNS} for r in rows])
    return dataset.shuffle(seed=shuffle_seed) if shuffle_seed is not None else dataset


def grpo_trl_config(config: GRPOTrainConfig, output_dir: str | Path,
                    model_dtype: str | None = None, processes: int | None = None) -> Any:
    """TRL's `GRPOConfig` for `config`; checks the group batch for this run's processes first."""
    from trl import GRPOConfig

    check_group_batch(config, num_processes() if processes is None else processes)
    if config.use_vllm:
        check_vllm_for_trl(installed_vllm())
    return GRPOConfig(
        **shared_trainer_kwargs(config, Path(output_dir), model_dtype),
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        beta=config.beta,
        loss_type=config.loss_type,
        epsilon=config.epsilon,
        scale_rewards="group" if config.scale_rewards else "none",
        use_bias_correction_kl=False,  # TRL 0.18.2's KL gradient
        **vllm_kwargs(config),
        model_init_kwargs={"dtype": load_dtype(config.deepspeed_config)},
        disable_tqdm=False,
    )


def vllm_kwargs(config: GRPOTrainConfig) -> dict[str, Any]:
    """TRL `GRPOConfig` fields of the vLLM settings (all of them, used or not)."""
    return {
        "use_vllm": config.use_vllm,
        "vllm_mode": config.vllm_mode,
        "vllm_server_base_url": config.vllm_server_base_url,
        "vllm_server_timeout": config.vllm_server_timeout,
        "vllm_gpu_memory_utilization": config.vllm_gpu_memory_utilization,
        "vllm_max_model_length": config.vllm_max_model_length,
        "vllm_tensor_parallel_size": config.vllm_tensor_parallel_size,
    }


@dataclass
class GRPOResult:
    """Where the trained policy is and what training logged."""

    model_dir: Path
    rows_used: int
    prompts_truncated: int
    log_history: list[dict[str, Any]]


def train_grpo(model_path: str, rows: list[dict[str, Any]],
               problems: Mapping[ProblemKey, Problem] | Iterable[Problem],
               verifier: Any, config: GRPOTrainConfig, output_dir: str | Path,
               on_log: Callable[[int, dict[str, float]], None] | None = None) -> GRPOResult:
    """Train the policy at `model_path` on ReST-GRPO rows (GRPO_DATA); save it with its
    tokenizer to `output_dir/final`. `problems` are keyed by (domain, problem_id)."""
    from transformers import AutoTokenizer

    from restrl.training.grpo_trainer import ResumableGRPOTrainer

    if not rows:
        raise ValueError(
            "no GRPO rows to train on: ReST keeps a problem only where its samples' rewards "
            "differ (std >= rest.std_accept_threshold) and here none did; sample more problems, "
            "more samples per problem (sampling.n) or at a higher sampling.temperature")
    output_dir = Path(output_dir)
    args = grpo_trl_config(config, output_dir, checkpoint_dtype(model_path))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    usable, cut = truncate_prompts_left(rows, tokenizer, config.max_prompt_length)
    trainer = ResumableGRPOTrainer(
        model=str(model_path),
        reward_funcs=make_reward_function(problems, verifier, config),
        args=args,
        train_dataset=grpo_dataset(usable, config.shuffle_seed),
        processing_class=tokenizer,
        callbacks=[forward_logs_callback(on_log)],
    )
    final = train_and_save(trainer, tokenizer, "GRPO", output_dir)
    return GRPOResult(final, len(usable), cut, trainer.state.log_history)
