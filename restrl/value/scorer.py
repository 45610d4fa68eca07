"""The `Scorer`s evaluation and MCTS use: a trained VM, or any single-logit HF reward model."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

from transformers import AutoModelForSequenceClassification, AutoTokenizer

from restrl.value.data import value_text
from restrl.value.model import (
    ValueModelInfo,
    forward_in_batches,
    inference_dtype,
    load_value_model,
    pick_device,
)


class ValueModelScorer:
    """`Scorer` over a VM saved by `train_value_model`: score = VM(value_text(question,
    answer)), question the raw problem text, answer the full state (init_code included)."""

    def __init__(self, model_dir: str | Path, batch_size: int = 16, device: str = "auto",
                 dtype: str | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self.loaded = load_value_model(model_dir, device=device, dtype=dtype)

    @property
    def info(self) -> ValueModelInfo:
        return self.loaded.info

    def score(self, questions: Sequence[str], answers: Sequence[str]) -> list[float]:
        texts = [value_text(q, a) for q, a in zip(questions, answers, strict=True)]
        return self.loaded.predict(texts, self.batch_size)


class HFRewardModelScorer:
    """`Scorer` over any Hugging Face sequence-classification reward model with ONE output
    logit (an ORM such as Skywork-Reward): score = that logit, or sigmoid(logit) with
    `sigmoid=True`. Scores are not clipped (they only rank samples, e.g. for best-of-N).

    The reward model sees its own chat format, as the seed's external RMs do
    (`rms/reward_models_extensions.py`): the tokenizer's chat template over
    [user: question, assistant: answer], tokenized without adding special tokens again (the
    template writes them). A tokenizer without a chat template gets the VM text
    (`value_text`). `format_text(question, answer)` overrides both. The tokenizer keeps the
    padding side it ships with (the model was trained with it) and truncates on the LEFT to
    `max_length` (the seed truncates on the tokenizer's side, usually the right, which would
    cut the end of the answer the model pools).
    """

    def __init__(self, model_id_or_path: str, batch_size: int = 16, device: str = "auto",
                 max_length: int = 2048, sigmoid: bool = False, dtype: str | None = None,
                 format_text: Callable[[str, str], str] | None = None) -> None:
        self.batch_size = batch_size
        self.max_length = max_length
        self.sigmoid = sigmoid
        self.device = pick_device(device)
        tokenizer = AutoTokenizer.from_pretrained(model_id_or_path)
        tokenizer.truncation_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        self.uses_chat_template = format_text is None and bool(
            getattr(tokenizer, "chat_template", None))
        self.format_text = format_text
        self.model = AutoModelForSequenceClassification.from_pretrained(
            model_id_or_path, dtype=inference_dtype(self.device, dtype))
        if self.model.config.num_labels != 1:
            raise ValueError(f"{model_id_or_path} has {self.model.config.num_labels} labels; "
                             "HFRewardModelScorer expects a single-logit reward model")
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = tokenizer.pad_token_id
        self.model.to(self.device).eval()

    def text(self, question: str, answer: str) -> str:
        """The text the reward model scores for one (question, answer) pair."""
        if self.format_text is not None:
            return self.format_text(question, answer)
        if self.uses_chat_template:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": question},
                 {"role": "assistant", "content": answer}], tokenize=False)
        return value_text(question, answer)

    def score(self, questions: Sequence[str], answers: Sequence[str]) -> list[float]:
        texts = [self.text(q, a) for q, a in zip(questions, answers, strict=True)]
        logits = forward_in_batches(self.model, self.tokenizer, texts, self.max_length,
                                    self.batch_size, self.device,
                                    add_special_tokens=not self.uses_chat_template)[:, 0]
        if self.sigmoid:
            return [1.0 / (1.0 + math.exp(-float(x))) for x in logits]
        return [float(x) for x in logits]
