"""Value-model training: the seed's losses on the transformers Trainer, resumable.

Every VM class trains with the transformers `Trainer` (CPU with `use_cpu`, GPUs under
`accelerate launch` / `deepspeed` with a DeepSpeed JSON; ZeRO-2 and ZeRO-3 configs ship in
`restrl/training/configs`; they leave the optimizer and scheduler to the Trainer). The rows are
split at random (seeded) into train and test (`split_indices`: 5%, at least 100 test rows). The
test split is evaluated before training (`eval_on_start`), every `save_steps` (each checkpoint)
and after training; with checkpoints on, the checkpoint with the lowest test loss is loaded at the
end (`load_best_model_at_end`, `metric_for_best_model="eval_loss"`) and is the one saved, as in
the seed. Metrics: loss, mse, accuracy (share of predictions strictly within `test_tol` of the
target, the seed's metric) and Spearman correlation, on the predictions the scorer returns.
restrl's option `ranking_weight` adds a within-problem ranking term (`ranking_loss`) and then
draws the micro-batches problem by problem (`ProblemBatchSampler`); off, it is the seed's loss.

The kept model is saved to `output_dir/final` with its tokenizer and `restrl_value.json`. A rerun
in the same `output_dir` resumes from the newest complete checkpoint
(`restrl.training.checkpoints`); the evaluations before it are read back from the checkpoint's
Trainer state, not redone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, Trainer, TrainingArguments

from restrl.training.callbacks import forward_logs_callback, quiet_progress
from restrl.training.checkpoints import resume_checkpoint
from restrl.training.trainer_args import (
    checkpoint_dtype,
    load_dtype,
    num_processes,
    shared_trainer_kwargs,
)
from restrl.value.config import ValueModelConfig
from restrl.value.data import ValueExample, problem_batches, split_indices, value_examples
from restrl.value.metrics import METRIC_NAMES, regression_metrics, scores_from_logits
from restrl.value.model import (
    CausalLMValueModel,
    ValueModelInfo,
    accepts_position_ids,
    build_value_model,
    encode_texts,
    pad_batch,
    prepare_tokenizer,
)

log = logging.getLogger("restrl.value")


def value_loss(logits: torch.Tensor, labels: torch.Tensor, rm_class: str,
               positive_weight: float = 0.5) -> torch.Tensor:
    """The seed's training loss of a micro-batch (logits rows x 1 or 2).

    transformers_scalar: mean squared error of logits[:, 0].
    standard_scalar: SUMMED squared error over the batch (the seed's nn.MSELoss(reduction="sum")).
    transformers_prob: cross-entropy against soft labels [1 - r, r] with class weights
        [1 - w, w], w = positive_weight, averaged over the batch (torch's probability-target
        cross-entropy divides by the batch size, not by the weights).
    """
    logits = logits.float()
    labels = labels.float()
    if rm_class == "transformers_prob":
        targets = torch.stack([1.0 - labels, labels], dim=1)
        weight = torch.tensor([1.0 - positive_weight, positive_weight], dtype=logits.dtype,
                              device=logits.device)
        return F.cross_entropy(logits, targets, weight=weight)
    reduction = "sum" if rm_class == "standard_scalar" else "mean"
    return F.mse_loss(logits[:, 0], labels, reduction=reduction)


def ranking_loss(logits: torch.Tensor, labels: torch.Tensor, problems: torch.Tensor,
                 rm_class: str) -> torch.Tensor:
    """restrl's within-problem ranking term (`ranking_weight`): mean of
    -log sigmoid(s_i - s_j) over the pairs of a micro-batch with the same problem id and
    labels_i > labels_j; s is the raw score (the scalar output, or the prob class's logit
    difference, which orders rows as softmax[1] does). 0 when the batch has no such pair."""
    logits = logits.float()
    scores = logits[:, 1] - logits[:, 0] if rm_class == "transformers_prob" else logits[:, 0]
    labels = labels.float()
    pairs = (problems[:, None] == problems[None, :]) & (labels[:, None] > labels[None, :])
    if not pairs.any():
        return scores.sum() * 0.0  # keeps the graph (and DDP's gradient sync) intact
    margins = scores[:, None] - scores[None, :]
    return F.softplus(-margins[pairs]).mean()


class ValueCollator:
    """Trainer collator: left-pads `input_ids`, adds float `labels` (the reward targets) and,
    for the ranking term, each row's `problem` id."""

    def __init__(self, pad_id: int, with_position_ids: bool = True,
                 with_problems: bool = False) -> None:
        self.pad_id = pad_id
        self.with_position_ids = with_position_ids
        self.with_problems = with_problems

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad_batch([f["input_ids"] for f in features], self.pad_id)
        if not self.with_position_ids:
            batch.pop("position_ids")
        batch["labels"] = torch.tensor([float(f["labels"]) for f in features],
                                       dtype=torch.float32)
        if self.with_problems:
            batch["problem"] = torch.tensor([f["problem"] for f in features], dtype=torch.long)
        return batch


class ProblemBatchSampler(torch.utils.data.Sampler[int]):
    """The train order of `problem_batches`, reshuffled each epoch (the Trainer sets it)."""

    def __init__(self, problems: list[int], batch_size: int, seed: int) -> None:
        self.problems, self.batch_size, self.seed, self.epoch = problems, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.problems)

    def __iter__(self) -> Any:
        return iter(problem_batches(self.problems, self.batch_size,
                                    self.seed * 100_003 + self.epoch))


class ValueTrainer(Trainer):
    """`value_loss` per micro-batch (the Trainer scales it for gradient accumulation); saves
    and reloads standard_scalar models as LM + head."""

    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, rm_class: str, positive_weight: float = 0.5,
                 ranking_weight: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rm_class = rm_class
        self.positive_weight = positive_weight
        self.ranking_weight = ranking_weight

    def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        outputs = model(**{k: v for k, v in inputs.items() if k not in ("labels", "problem")})
        logits = outputs["logits"].float()
        loss = value_loss(logits, inputs["labels"], self.rm_class, self.positive_weight)
        if self.ranking_weight:
            loss = loss + self.ranking_weight * ranking_loss(
                logits, inputs["labels"], inputs["problem"], self.rm_class)
        return (loss, {"logits": logits}) if return_outputs else loss

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        if not self.ranking_weight:
            return super()._get_train_sampler(train_dataset)
        dataset = self.train_dataset if train_dataset is None else train_dataset
        return ProblemBatchSampler([row["problem"] for row in dataset], self._train_batch_size,
                                   self.args.data_seed or 0)

    def _wrapper_outside_deepspeed(self) -> CausalLMValueModel | None:
        """The standard_scalar wrapper, when the Trainer's own save/load would miss its keys
        (DeepSpeed saves and reloads its engine's state itself)."""
        model = self.accelerator.unwrap_model(self.model)
        if self.is_deepspeed_enabled or not isinstance(model, CausalLMValueModel):
            return None
        return model

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        model = self.accelerator.unwrap_model(self.model)
        if not isinstance(model, CausalLMValueModel):
            return super()._save(output_dir, state_dict=state_dict)
        if not self.args.should_save:
            return None
        output_dir = output_dir or self.args.output_dir
        model.save(output_dir, state_dict=state_dict)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        return None

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        wrapper = self._wrapper_outside_deepspeed()
        if wrapper is None:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        wrapper.load_weights(resume_from_checkpoint)
        return None

    def _load_best_model(self) -> None:
        wrapper = self._wrapper_outside_deepspeed()
        if wrapper is None:
            return super()._load_best_model()
        log.info("loading the best checkpoint %s", self.state.best_model_checkpoint)
        wrapper.load_weights(self.state.best_model_checkpoint)
        return None


@dataclass
class ValueTrainResult:
    """Where the trained VM is and how it did on the test split.

    metrics: "before/<name>" (the base model with its new head) and "after/<name>" (the kept
    model: the best checkpoint when checkpoints are on) for loss, mse, accuracy, spearman;
    empty without a test split. evaluations: (step, metrics) of every test evaluation in
    order (before, each checkpoint, after). best_checkpoint: the kept checkpoint's directory,
    None when the last model is kept. log_history: the Trainer's log entries.
    """

    model_dir: Path
    metrics: dict[str, float]
    log_history: list[dict[str, Any]]
    n_train: int
    n_eval: int
    evaluations: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    best_checkpoint: str | None = None


def _encode_examples(tokenizer: Any, examples: Sequence[ValueExample], max_length: int,
                     problem_ids: Mapping[str, int]) -> list[dict[str, Any]]:
    ids = encode_texts(tokenizer, [example.text for example in examples], max_length)
    return [{"input_ids": seq, "labels": example.reward, "problem": problem_ids[example.problem]}
            for seq, example in zip(ids, examples, strict=True)]


def evaluations_of(log_history: Sequence[Mapping[str, Any]]
                   ) -> list[tuple[int, dict[str, float]]]:
    """(step, metrics) of each test evaluation in a Trainer's log history, in order. Read
    from the history rather than collected by a callback: a resumed run's history holds the
    evaluations made before the interruption."""
    return [(int(entry["step"]), {name: float(entry[f"eval_{name}"]) for name in METRIC_NAMES
                                  if f"eval_{name}" in entry})
            for entry in log_history if "eval_loss" in entry]


def _training_args(config: ValueModelConfig, output_dir: Path, base_model_path: str,
                   keep_best: bool, eval_on_start: bool) -> TrainingArguments:
    return TrainingArguments(
        **shared_trainer_kwargs(config, output_dir, checkpoint_dtype(base_model_path)),
        per_device_eval_batch_size=config.eval_batch_size or config.batch_size_per_device,
        eval_strategy="steps" if keep_best else "no",
        eval_steps=config.save_steps if keep_best else None,
        load_best_model_at_end=keep_best,
        metric_for_best_model="eval_loss" if keep_best else None,
        greater_is_better=False if keep_best else None,
        eval_on_start=eval_on_start,  # the "before" evaluation, inside the training loop
        label_names=["labels"],
        remove_unused_columns=False,
        data_seed=config.seed,
    )


def train_value_model(base_model_path: str, rows: Iterable[Mapping[str, Any]] | Any,
                      config: ValueModelConfig, output_dir: str | Path,
                      on_log: Callable[[int, dict[str, float]], None] | None = None,
                      ) -> ValueTrainResult:
    """Train a VM of `config.rm_class` from the checkpoint at `base_model_path` (whatever the
    caller passes; the pipeline passes the policy `value_init` names) on `value_data` rows
    (dicts or a pyarrow Table with prompt = raw problem text, answer = full state, reward);
    save the kept model (the best checkpoint by test loss, or the last one) to
    `output_dir/final`.

    `on_log(step, numeric_logs)` receives every Trainer log (train loss, eval metrics), e.g. to
    forward them to MLflow.
    """
    output_dir = Path(output_dir)
    examples = value_examples(rows)
    if not examples:
        raise ValueError("no value rows to train on")
    if config.rm_class == "transformers_prob" and any(not 0.0 <= e.reward <= 1.0
                                                      for e in examples):
        raise ValueError("transformers_prob needs rewards in [0, 1] (soft labels [1 - r, r])")
    train_idx, eval_idx = split_indices(len(examples), config.eval_fraction, config.seed,
                                        config.min_eval_rows)
    train_examples = [examples[i] for i in train_idx]
    eval_examples = [examples[i] for i in eval_idx]
    if config.eval_fraction > 0 and not eval_examples:
        log.warning("%d value rows: too few for a test split; the last model is kept",
                    len(examples))

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(base_model_path))
    # Test evaluations ride on the checkpoints (the seed's eval_steps = save_steps); the best
    # checkpoint by test loss is reloaded at the end.
    keep_best = bool(eval_examples) and bool(config.save_steps)
    resume = resume_checkpoint("the value model", output_dir, num_processes())
    # TrainingArguments come before the model: under ZeRO-3 they make from_pretrained load the
    # weights already partitioned across ranks (deepspeed.zero.Init). A resumed run's "before"
    # evaluation is in its restored history.
    args = _training_args(config, output_dir, base_model_path, keep_best,
                          eval_on_start=bool(eval_examples) and resume is None)

    torch.manual_seed(config.seed)  # the new head's initialisation
    # fp32 weights without DeepSpeed (bf16 AdamW steps would round lr 1e-7 updates away).
    model = build_value_model(base_model_path, config.rm_class, tokenizer.pad_token_id,
                              dtype=load_dtype(config.deepspeed_config))

    def compute_metrics(prediction: Any) -> dict[str, float]:
        logits = prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        scores = scores_from_logits(np.reshape(logits, (len(logits), -1)), config.rm_class,
                                    config.min_rw, config.max_rw)
        return regression_metrics(scores, np.asarray(prediction.label_ids).reshape(-1),
                                  config.test_tol)

    problem_ids = {problem: i for i, problem in enumerate(dict.fromkeys(e.problem
                                                                          for e in examples))}
    trainer = ValueTrainer(
        model=model,
        args=args,
        data_collator=ValueCollator(tokenizer.pad_token_id, accepts_position_ids(model),
                                    with_problems=config.ranking_weight > 0),
        train_dataset=_encode_examples(tokenizer, train_examples, config.max_length,
                                       problem_ids),
        eval_dataset=(_encode_examples(tokenizer, eval_examples, config.max_length,
                                       problem_ids) if eval_examples else None),
        processing_class=tokenizer,
        compute_metrics=compute_metrics if eval_examples else None,
        callbacks=[forward_logs_callback(on_log)],
        rm_class=config.rm_class,
        positive_weight=config.positive_weight,
        ranking_weight=config.ranking_weight,
    )
    quiet_progress(trainer)
    trainer.train(resume_from_checkpoint=resume)
    if eval_examples:
        trainer.evaluate()  # the "after" evaluation, of the kept (best) model

    final = output_dir / "final"
    trainer.save_model(str(final))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(final))
        ValueModelInfo(rm_class=config.rm_class, min_rw=config.min_rw, max_rw=config.max_rw,
                       max_length=config.max_length,
                       base_model=str(base_model_path)).write(final)

    evaluations = evaluations_of(trainer.state.log_history)
    metrics: dict[str, float] = {}
    if evaluations:
        for phase, (_, values) in (("before", evaluations[0]), ("after", evaluations[-1])):
            metrics.update({f"{phase}/{name}": value for name, value in values.items()})
    best = trainer.state.best_model_checkpoint if keep_best else None
    return ValueTrainResult(final, metrics, trainer.state.log_history, len(train_examples),
                            len(eval_examples), evaluations, best)
