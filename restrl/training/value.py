"""Value model (VM) training and inference (DESIGN.md step 7; REFERENCE.md section 6).

A VM reads a question and a program state and predicts the value target of that state, a
reward in [min_rw, max_rw]. The question is the RAW problem text (`Problem.prompt`, no chat
template, no instructions) and the answer is the FULL state, the problem's init_code included
(a partial program for MCTS nodes, a whole one for best-of-N), as in the ReST-RL seed
(`rms/input.py`). Both go into one text, the same in training and scoring (`value_text`):

    "\\n<prompt>\\n{question}\\n<answer>\\n{answer}\\n"

Three model classes, as in the seed (`rms/reward_models.py`, `rms/transformers_utils.py`):

    transformers_scalar  AutoModelForSequenceClassification, 1 output, mean MSE; the prediction
                         is clipped to [min_rw, max_rw]                               (default)
    standard_scalar      causal LM; nn.Linear(vocab, 1) over its last-token logits, SUMMED MSE
                         over the batch; prediction clipped to [min_rw, max_rw]
    transformers_prob    AutoModelForSequenceClassification, 2 outputs, cross-entropy against
                         SOFT labels [1 - r, r] with class weights [1 - w, w] (w =
                         positive_weight, 0.5); the prediction is softmax(logits)[1], unclipped

Text handling, the same in training and scoring: the tokenizer pads and truncates on the LEFT.
Left truncation keeps the end of a long text, i.e. the most recent code, which decides the value
of a partial program; left padding puts every text's last token at position -1. Explicit
`position_ids` (0 at the first real token) are passed so left padding does not shift positions
(the seed passes none; restrl's addition, so a text scores the same alone or in a batch).
Pooling, checked in transformers 5: `Qwen2ForSequenceClassification` (like every
`GenericForSequenceClassification`) pools the rightmost token whose id differs from
`config.pad_token_id`, which handles left and right padding alike; with left padding that is
position -1 unless the text itself ends with the pad token. We therefore always set
`config.pad_token_id` from the tokenizer (eos when the tokenizer has no pad token).

Training uses the transformers `Trainer` for every class (CPU with `use_cpu`, GPUs under
`accelerate launch` / `deepspeed` with a DeepSpeed JSON; ZeRO-2 and ZeRO-3 configs ship in
`restrl/training/configs`; they leave the optimizer and scheduler to the Trainer). The rows are
split at random (seeded) into train and test (`split_indices`: 5%, at least 100 test rows). The
test split is evaluated before training (`eval_on_start`), every `save_steps` (each checkpoint)
and after training; with checkpoints on, the checkpoint with the lowest test loss is loaded at the
end (`load_best_model_at_end`, `metric_for_best_model="eval_loss"`) and is the one saved, as in
the seed. Metrics: loss, mse, accuracy (share of predictions strictly within `test_tol` of the
target, the seed's metric) and Spearman correlation, on the predictions the scorer returns.

The kept model is saved to `output_dir/final` with its tokenizer and `restrl_value.json`
(rm_class, min_rw, max_rw, max_length): `ValueModelScorer(dir)` or `load_value_model(dir)` reload
any class from that directory. torch and transformers are imported inside functions, so importing
this module (for `ValueModelConfig`, a flow parameter) stays cheap.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

log = logging.getLogger("restrl.training.value")

RM_CLASSES = ("transformers_scalar", "standard_scalar", "transformers_prob")
INFO_FILE = "restrl_value.json"
HEAD_FILE = "value_head.safetensors"  # standard_scalar: the linear head beside the saved LM
METRIC_NAMES = ("loss", "mse", "accuracy", "spearman")
# The seed's input format (rms/input.py): the raw question, then the full (partial) program.
VALUE_TEXT = "\n<prompt>\n{question}\n<answer>\n{answer}\n"


@dataclass
class ValueModelConfig:
    """Everything VM training reads. Defaults are the ReST-RL README's example run
    (`rms/train.sh`: max_length 2048, lr 1e-7, 2 epochs, batch 1 per device, save_steps 0.5);
    the seed script's own argparse defaults differ (max_length 1024, 1 epoch, batch 4 per
    device, save_steps 0.25) and are noted per field.

    Parameters that control the model:
        rm_class (str, "transformers_scalar"): "transformers_scalar" (sequence-classification
            head, 1 output, MSE; the README's choice), "standard_scalar" (linear head over a
            causal LM's last-token logits, summed MSE) or "transformers_prob" (2-class head,
            soft-label weighted cross-entropy, prediction = softmax[1]).
        max_length (int, 2048; script default 1024): tokens of the VM text kept, from the END
            (left truncation keeps the latest code, which decides a state's value).
        min_rw, max_rw (float, 0.0, 1.0): the range of the verification reward; scalar
            predictions are clipped to it (prob predictions are probabilities, never clipped).

    Parameters that control the data split and the test metrics:
        eval_fraction (float, 0.05): share of rows held out at random (seeded) as the test
            split, the seed's 95/5 split; 0 disables the test split (then no "before"/"after"
            metrics and no best-checkpoint selection).
        min_eval_rows (int, 100): the test split has at least this many rows (the seed's
            minimum), but never more than (rows - 1) // 2, so the train split stays larger
            (the seed instead refuses data sets of 200 rows or fewer). 0 keeps the plain fraction.
        test_tol (float, 0.05): a test prediction is "accurate" when |pred - target| < test_tol
            (strict, as the seed's `--test_tol`).

    Parameters that control the loss:
        positive_weight (float, 0.5): transformers_prob only; w in the class weights [1 - w, w]
            of the cross-entropy (the seed's `--loss_weight_factor`); 0.5 weighs both classes
            alike. Must lie in [0, 1].

    Parameters that control training:
        learning_rate (float, 1e-7): the seed's value for 7B models; tiny models need ~1e-4 to
            1e-3 (their heads start from scratch).
        epochs (float, 2.0; script default 1) and max_steps (int, -1: run the epochs).
        save_steps (float, 0.5; script default 0.25): checkpoint AND evaluate the test split
            every this many steps, or this fraction of the run if < 1; the best checkpoint by
            test loss is kept. 0 saves no checkpoints: the last model is kept (restrl option).
        batch_size_per_device (int, 1; script default 4), gradient_accumulation_steps (int, 1),
            weight_decay (float, 0.0; the seed's default).
        eval_batch_size (int | None, None): test batch size; None uses batch_size_per_device,
            as the seed does. Scores do not depend on it (left padding + position_ids).
        gradient_checkpointing (bool, False): trade compute for memory on large models.
        deepspeed_config (str | None, None): path of a DeepSpeed JSON (restrl/training/configs/
            zero2.json or zero3.json); used under `accelerate launch` / `deepspeed`.
        logging_steps (int, 1), seed (int, 0: the split, the head init and the data order).
    """

    rm_class: str = "transformers_scalar"
    max_length: int = 2048
    min_rw: float = 0.0
    max_rw: float = 1.0
    eval_fraction: float = 0.05
    min_eval_rows: int = 100
    test_tol: float = 0.05
    positive_weight: float = 0.5
    learning_rate: float = 1e-7
    epochs: float = 2.0
    max_steps: int = -1
    save_steps: float = 0.5
    batch_size_per_device: int = 1
    eval_batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    weight_decay: float = 0.0
    gradient_checkpointing: bool = False
    deepspeed_config: str | None = None
    logging_steps: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rm_class not in RM_CLASSES:
            raise ValueError(f"rm_class must be one of {RM_CLASSES}, got {self.rm_class!r}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.min_eval_rows < 0:
            raise ValueError(f"min_eval_rows must be >= 0, got {self.min_eval_rows}")
        if not self.min_rw < self.max_rw:
            raise ValueError(f"min_rw ({self.min_rw}) must be below max_rw ({self.max_rw})")
        if self.max_length < 1:
            raise ValueError(f"max_length must be positive, got {self.max_length}")
        if not 0.0 <= self.positive_weight <= 1.0:
            raise ValueError(f"positive_weight must be in [0, 1], got {self.positive_weight}")


@dataclass(frozen=True)
class ValueModelInfo:
    """What a saved VM directory needs besides its weights (`restrl_value.json`)."""

    rm_class: str
    min_rw: float
    max_rw: float
    max_length: int
    base_model: str = ""

    def write(self, directory: str | Path) -> None:
        Path(directory, INFO_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, directory: str | Path) -> ValueModelInfo:
        """Read `restrl_value.json`; keys this version does not know (e.g. an older
        `prob_threshold`) are ignored."""
        path = Path(directory, INFO_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: not a restrl value model directory")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(path.read_text()).items() if k in known})


# ----------------------------------------------------------------------------- data


def value_text(question: str, answer: str) -> str:
    """The VM's input text: the raw problem text and the full (partial) program, init_code
    included, in the seed's format (`VALUE_TEXT`)."""
    return VALUE_TEXT.format(question=question, answer=answer)


def value_examples(rows: Iterable[Mapping[str, Any]] | Any) -> list[tuple[str, float]]:
    """(text, reward) pairs from `value_data` rows: dicts or a pyarrow Table with `prompt` (the
    raw problem text), `answer` (the full state, init_code included) and `reward` columns
    (other columns are ignored)."""
    import pyarrow as pa

    if isinstance(rows, pa.Table):
        rows = rows.select(["prompt", "answer", "reward"]).to_pylist()
    examples = []
    for i, row in enumerate(rows):
        reward = float(row["reward"])
        if not math.isfinite(reward):
            raise ValueError(f"row {i} has a non-finite reward {row['reward']!r}")
        examples.append((value_text(row["prompt"], row["answer"]), reward))
    return examples


def split_indices(n: int, eval_fraction: float, seed: int,
                  min_eval_rows: int = 0) -> tuple[list[int], list[int]]:
    """Seeded shuffle of range(n) into (train, test).

    test = n - int(n * (1 - eval_fraction)) rows (the seed's 95/5 split, rounding the test
    side up), raised to `min_eval_rows`, then capped at (n - 1) // 2 so the train split is
    always the larger one: the seed raises the test split to 100 rows and asserts train >
    test, i.e. it refuses data sets of 200 rows or fewer; restrl shrinks the test split
    instead (and holds none out below 3 rows). eval_fraction 0 holds out nothing.
    """
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_eval = 0
    if eval_fraction > 0:
        n_eval = max(n - int(n * (1.0 - eval_fraction)), min_eval_rows)
        n_eval = min(n_eval, (n - 1) // 2)
    return order[n_eval:], order[:n_eval]


# ----------------------------------------------------------------------------- losses, metrics


def value_loss(logits: Any, labels: Any, rm_class: str, positive_weight: float = 0.5) -> Any:
    """The seed's training loss of a micro-batch (torch tensors; logits rows x 1 or 2).

    transformers_scalar: mean squared error of logits[:, 0].
    standard_scalar: SUMMED squared error over the batch (the seed's nn.MSELoss(reduction="sum")).
    transformers_prob: cross-entropy against soft labels [1 - r, r] with class weights
        [1 - w, w], w = positive_weight, averaged over the batch (torch's probability-target
        cross-entropy divides by the batch size, not by the weights).
    """
    import torch
    import torch.nn.functional as F

    logits = logits.float()
    labels = labels.float()
    if rm_class == "transformers_prob":
        targets = torch.stack([1.0 - labels, labels], dim=1)
        weight = torch.tensor([1.0 - positive_weight, positive_weight], dtype=logits.dtype,
                              device=logits.device)
        return F.cross_entropy(logits, targets, weight=weight)
    reduction = "sum" if rm_class == "standard_scalar" else "mean"
    return F.mse_loss(logits[:, 0], labels, reduction=reduction)


def regression_metrics(predictions: Sequence[float], targets: Sequence[float],
                       test_tol: float) -> dict[str, float]:
    """mse, accuracy (share with |pred - target| < test_tol, strict as in the seed) and
    Spearman rho of the predictions. Spearman is 0.0 where it is undefined (fewer than 2 rows,
    constant predictions/targets)."""
    import numpy as np
    from scipy.stats import spearmanr

    pred = np.asarray(predictions, dtype=np.float64)
    true = np.asarray(targets, dtype=np.float64)
    if pred.size == 0:
        return {"mse": float("nan"), "accuracy": float("nan"), "spearman": 0.0}
    rho = 0.0
    if pred.size >= 2 and np.ptp(pred) > 0 and np.ptp(true) > 0:
        rho = float(spearmanr(pred, true).statistic)
        rho = rho if math.isfinite(rho) else 0.0
    return {
        "mse": float(np.mean((pred - true) ** 2)),
        "accuracy": float(np.mean(np.abs(pred - true) < test_tol)),
        "spearman": rho,
    }


def scores_from_logits(logits: Any, rm_class: str, min_rw: float = -math.inf,
                       max_rw: float = math.inf) -> Any:
    """Raw VM output (rows x 1, or rows x 2 for transformers_prob) -> scores, numpy: the
    scalar classes' output clipped to [min_rw, max_rw], or the prob class's softmax[1]."""
    import numpy as np

    logits = np.asarray(logits, dtype=np.float64)
    if rm_class == "transformers_prob":
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted[:, 1] / shifted.sum(axis=-1)
    return np.clip(logits[:, 0], min_rw, max_rw)


# ----------------------------------------------------------------------------- tokenization


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding and left truncation; eos doubles as pad when the tokenizer has none."""
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def encode_texts(tokenizer: Any, texts: Sequence[str], max_length: int,
                 add_special_tokens: bool = True) -> list[list[int]]:
    """Token ids of each text, truncated on the side the tokenizer says (left for VMs).
    `add_special_tokens=False` for texts a chat template rendered (they hold their own)."""
    if not texts:
        return []
    return tokenizer(list(texts), truncation=True, max_length=max_length,
                     add_special_tokens=add_special_tokens)["input_ids"]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, side: str = "left") -> dict:
    """input_ids, attention_mask and position_ids (0 at each row's first real token)."""
    import torch

    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        input_ids[row, span] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, span] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids}


class ValueCollator:
    """Trainer collator: left-pads `input_ids`, adds float `labels` (the reward targets)."""

    def __init__(self, pad_id: int, with_position_ids: bool = True) -> None:
        self.pad_id = pad_id
        self.with_position_ids = with_position_ids

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict:
        import torch

        batch = pad_batch([f["input_ids"] for f in features], self.pad_id)
        if not self.with_position_ids:
            batch.pop("position_ids")
        batch["labels"] = torch.tensor([float(f["labels"]) for f in features],
                                       dtype=torch.float32)
        return batch


def _accepts_position_ids(model: Any) -> bool:
    import inspect

    return "position_ids" in inspect.signature(model.forward).parameters


# ----------------------------------------------------------------------------- models


@functools.cache
def causal_lm_value_model_class() -> type:
    """The `standard_scalar` module class (built on first use so this module imports no torch):
    a causal LM whose logits at the last position (vocab-sized) feed nn.Linear(vocab, 1)."""
    from torch import nn

    class CausalLMValueModel(nn.Module):
        """standard_scalar VM: `head(lm(text).logits[:, -1])`, saved as the LM (save_pretrained)
        plus `value_head.safetensors`."""

        def __init__(self, lm: Any) -> None:
            super().__init__()
            self.lm = lm
            self.config = lm.config  # the Trainer and DeepSpeed read hidden sizes from here
            self.head = nn.Linear(lm.get_output_embeddings().out_features, 1)

        def forward(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None,
                    **kwargs: Any) -> dict:
            out = self.lm(input_ids=input_ids, attention_mask=attention_mask,
                          position_ids=position_ids, use_cache=False, logits_to_keep=1)
            last = out.logits[:, -1, :].to(self.head.weight.dtype)  # left padding: the last token
            return {"logits": self.head(last)}

        def activation_checkpointing_enable(self, **kwargs: Any) -> None:
            self.lm.activation_checkpointing_enable(**kwargs)

        def gradient_checkpointing_enable(self, **kwargs: Any) -> None:  # transformers < 5.2x
            self.lm.gradient_checkpointing_enable(**kwargs)

        def save(self, directory: str | Path, state_dict: Mapping[str, Any] | None = None) -> None:
            """Save the LM with save_pretrained and the head's weights beside it. `state_dict`
            (the Trainer's gathered one under ZeRO-3) overrides the module's own tensors."""
            from safetensors.torch import save_file

            state = dict(state_dict) if state_dict is not None else None
            lm_state = ({k[len("lm."):]: v for k, v in state.items() if k.startswith("lm.")}
                        if state is not None else None)
            head_state = ({k[len("head."):]: v for k, v in state.items()
                           if k.startswith("head.")} if state is not None
                          else self.head.state_dict())
            Path(directory).mkdir(parents=True, exist_ok=True)
            self.lm.save_pretrained(str(directory), state_dict=lm_state)
            save_file({k: v.detach().float().cpu().contiguous() for k, v in head_state.items()},
                      str(Path(directory, HEAD_FILE)))

        def load_weights(self, directory: str | Path) -> None:
            """Load LM + head weights saved by `save` into this module (the Trainer's
            best-checkpoint reload; its default would match no key of the wrapper)."""
            from safetensors.torch import load_file

            state: dict[str, Any] = {}
            for path in sorted(Path(directory).glob("*.safetensors")):
                if path.name != HEAD_FILE:
                    state.update(load_file(str(path), device="cpu"))
            result = self.lm.load_state_dict(state, strict=False)
            if result.unexpected_keys or not state:
                raise RuntimeError(f"{directory}: not an LM checkpoint of this model "
                                   f"(unexpected keys {result.unexpected_keys[:5]})")
            self.head.load_state_dict(load_file(str(Path(directory, HEAD_FILE)), device="cpu"))

        @classmethod
        def load(cls, directory: str | Path, **lm_kwargs: Any) -> CausalLMValueModel:
            from safetensors.torch import load_file
            from transformers import AutoModelForCausalLM

            model = cls(AutoModelForCausalLM.from_pretrained(str(directory), **lm_kwargs))
            model.head.load_state_dict(load_file(str(Path(directory, HEAD_FILE))))
            return model

    return CausalLMValueModel


def build_value_model(base_model_path: str, rm_class: str, pad_token_id: int,
                      **from_pretrained_kwargs: Any) -> Any:
    """A trainable VM of `rm_class` on top of the checkpoint at `base_model_path`."""
    if rm_class == "standard_scalar":
        from transformers import AutoModelForCausalLM

        lm = AutoModelForCausalLM.from_pretrained(base_model_path, **from_pretrained_kwargs)
        lm.config.pad_token_id = pad_token_id
        return causal_lm_value_model_class()(lm)
    from transformers import AutoModelForSequenceClassification

    if rm_class == "transformers_scalar":
        kwargs = {"num_labels": 1, "problem_type": "regression"}
    elif rm_class == "transformers_prob":
        kwargs = {"num_labels": 2, "problem_type": "single_label_classification"}
    else:
        raise ValueError(f"rm_class must be one of {RM_CLASSES}, got {rm_class!r}")
    model = AutoModelForSequenceClassification.from_pretrained(
        base_model_path, pad_token_id=pad_token_id, **kwargs, **from_pretrained_kwargs)
    model.config.pad_token_id = pad_token_id  # the pooling finds the last non-pad token by it
    return model


def _pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _inference_dtype(device: str, dtype: str | None) -> Any:
    import torch

    if dtype is not None:
        return getattr(torch, dtype)
    on_cuda = device.startswith("cuda")
    return torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float32


def forward_in_batches(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int,
                       batch_size: int, device: str, add_special_tokens: bool = True) -> Any:
    """The model's output `logits` (rows x labels, float32 numpy) for each text, in order.
    Texts are batched by length to limit padding; padding follows the tokenizer's side, and
    position_ids are passed when the model's forward takes them."""
    import numpy as np
    import torch

    encoded = encode_texts(tokenizer, texts, max_length, add_special_tokens)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    with_positions = _accepts_position_ids(model)
    outputs: list[Any] = [None] * len(encoded)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = pad_batch([encoded[i] for i in chunk], tokenizer.pad_token_id,
                              side=tokenizer.padding_side)
            if not with_positions:
                batch.pop("position_ids")
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(**batch)["logits"].float().cpu().numpy()
            for row, i in enumerate(chunk):
                outputs[i] = logits[row]
    if not outputs:
        return np.zeros((0, 1), dtype=np.float32)
    return np.stack(outputs)


@dataclass
class LoadedValueModel:
    """A VM loaded from a saved directory, ready to predict clipped scores."""

    model: Any
    tokenizer: Any
    info: ValueModelInfo
    device: str

    def predict(self, texts: Sequence[str], batch_size: int = 16) -> list[float]:
        """VM scores of `value_text(question, answer)` texts (scalar classes clipped to
        [min_rw, max_rw], the prob class's softmax[1])."""
        if not texts:
            return []
        logits = forward_in_batches(self.model, self.tokenizer, texts, self.info.max_length,
                                    batch_size, self.device)
        scores = scores_from_logits(logits, self.info.rm_class, self.info.min_rw,
                                    self.info.max_rw)
        return [float(s) for s in scores]


def load_value_model(model_dir: str | Path, device: str = "auto",
                     dtype: str | None = None) -> LoadedValueModel:
    """Load a VM saved by `train_value_model` (any class; `restrl_value.json` says which).
    `dtype` is a torch dtype name; None means bfloat16 on a GPU that supports it, else float32."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    info = ValueModelInfo.read(model_dir)
    device = _pick_device(device)
    torch_dtype = _inference_dtype(device, dtype)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(str(model_dir)))
    if info.rm_class == "standard_scalar":
        model = causal_lm_value_model_class().load(model_dir, dtype=torch_dtype)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir),
                                                                   dtype=torch_dtype)
        model.config.pad_token_id = tokenizer.pad_token_id
    model.to(device).eval()
    return LoadedValueModel(model, tokenizer, info, device)


# ----------------------------------------------------------------------------- scorers


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
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.batch_size = batch_size
        self.max_length = max_length
        self.sigmoid = sigmoid
        self.device = _pick_device(device)
        tokenizer = AutoTokenizer.from_pretrained(model_id_or_path)
        tokenizer.truncation_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        self.uses_chat_template = format_text is None and bool(
            getattr(tokenizer, "chat_template", None))
        self.format_text = format_text
        self.model = AutoModelForSequenceClassification.from_pretrained(
            model_id_or_path, dtype=_inference_dtype(self.device, dtype))
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


# ----------------------------------------------------------------------------- training


@functools.cache
def value_trainer_class() -> type:
    """`Trainer` with the VM losses (built on first use, like the model class above)."""
    from transformers import Trainer

    class ValueTrainer(Trainer):
        """`value_loss` per micro-batch (the Trainer scales it for gradient accumulation);
        saves and reloads standard_scalar models as LM + head."""

        loss_is_scaled_for_ga = False

        def __init__(self, *args: Any, rm_class: str, positive_weight: float = 0.5,
                     **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.rm_class = rm_class
            self.positive_weight = positive_weight

        def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
            logits = outputs["logits"].float()
            loss = value_loss(logits, inputs["labels"], self.rm_class, self.positive_weight)
            return (loss, {"logits": logits}) if return_outputs else loss

        def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
            model = self.accelerator.unwrap_model(self.model)
            if not isinstance(model, causal_lm_value_model_class()):
                return super()._save(output_dir, state_dict=state_dict)
            if not self.args.should_save:
                return None
            output_dir = output_dir or self.args.output_dir
            model.save(output_dir, state_dict=state_dict)
            if self.processing_class is not None:
                self.processing_class.save_pretrained(output_dir)
            return None

        def _load_best_model(self) -> None:
            model = self.accelerator.unwrap_model(self.model)
            if self.is_deepspeed_enabled or not isinstance(model, causal_lm_value_model_class()):
                return super()._load_best_model()  # DeepSpeed reloads its own engine state
            log.info("loading the best checkpoint %s", self.state.best_model_checkpoint)
            model.load_weights(self.state.best_model_checkpoint)
            return None

    return ValueTrainer


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


def _encode_examples(tokenizer: Any, examples: Sequence[tuple[str, float]],
                     max_length: int) -> list[dict[str, Any]]:
    ids = encode_texts(tokenizer, [text for text, _ in examples], max_length)
    return [{"input_ids": seq, "labels": reward}
            for seq, (_, reward) in zip(ids, examples, strict=True)]


def _checkpointing_args(enabled: bool) -> dict[str, bool]:
    """The TrainingArguments flag for activation checkpointing, under its name in this
    transformers (`gradient_checkpointing` is a deprecated alias in late 5.x)."""
    import dataclasses

    from transformers import TrainingArguments

    if not enabled:
        return {}
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return {"activation_checkpointing" if "activation_checkpointing" in names
            else "gradient_checkpointing": True}


def train_value_model(base_model_path: str, rows: Iterable[Mapping[str, Any]] | Any,
                      config: ValueModelConfig, output_dir: str | Path,
                      on_log: Callable[[int, dict[str, float]], None] | None = None,
                      ) -> ValueTrainResult:
    """Train a VM of `config.rm_class` from the checkpoint at `base_model_path` (whatever the
    caller passes; the flow passes the base policy) on `value_data` rows (dicts or a pyarrow
    Table with prompt = raw problem text, answer = full state, reward); save the kept model
    (the best checkpoint by test loss, or the last one) to `output_dir/final`.

    `on_log(step, numeric_logs)` receives every Trainer log (train loss, eval metrics), e.g. to
    forward them to MLflow.
    """
    import torch
    from transformers import AutoTokenizer, TrainingArguments

    from restrl.training.trainer_args import checkpoint_dtype, load_dtype, shared_trainer_kwargs

    output_dir = Path(output_dir)
    examples = value_examples(rows)
    if not examples:
        raise ValueError("no value rows to train on")
    if config.rm_class == "transformers_prob" and any(not 0.0 <= r <= 1.0 for _, r in examples):
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

    # TrainingArguments come before the model: under ZeRO-3 they make from_pretrained load the
    # weights already partitioned across ranks (deepspeed.zero.Init).
    args = TrainingArguments(
        **shared_trainer_kwargs(config, output_dir, checkpoint_dtype(base_model_path)),
        per_device_eval_batch_size=config.eval_batch_size or config.batch_size_per_device,
        weight_decay=config.weight_decay,
        eval_strategy="steps" if keep_best else "no",
        eval_steps=config.save_steps if keep_best else None,
        load_best_model_at_end=keep_best,
        metric_for_best_model="eval_loss" if keep_best else None,
        greater_is_better=False if keep_best else None,
        eval_on_start=bool(eval_examples),  # the "before" evaluation, inside the training loop
        label_names=["labels"],
        remove_unused_columns=False,
        data_seed=config.seed,
        **_checkpointing_args(config.gradient_checkpointing),
    )

    torch.manual_seed(config.seed)  # the new head's initialisation
    # fp32 weights without DeepSpeed (bf16 AdamW steps would round lr 1e-7 updates away).
    model = build_value_model(base_model_path, config.rm_class, tokenizer.pad_token_id,
                              dtype=load_dtype(config.deepspeed_config))

    from restrl.training.callbacks import forward_logs_callback, quiet_progress

    evaluations: list[tuple[int, dict[str, float]]] = []

    class ForwardLogs(type(forward_logs_callback(on_log))):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # noqa: ANN001, ANN201
            if metrics:
                evaluations.append((state.global_step, {
                    name: float(metrics[f"eval_{name}"]) for name in METRIC_NAMES
                    if f"eval_{name}" in metrics}))

    def compute_metrics(prediction: Any) -> dict[str, float]:
        import numpy as np

        logits = prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        scores = scores_from_logits(np.reshape(logits, (len(logits), -1)), config.rm_class,
                                    config.min_rw, config.max_rw)
        return regression_metrics(scores, np.asarray(prediction.label_ids).reshape(-1),
                                  config.test_tol)

    trainer = value_trainer_class()(
        model=model,
        args=args,
        data_collator=ValueCollator(tokenizer.pad_token_id, _accepts_position_ids(model)),
        train_dataset=_encode_examples(tokenizer, train_examples, config.max_length),
        eval_dataset=(_encode_examples(tokenizer, eval_examples, config.max_length)
                      if eval_examples else None),
        processing_class=tokenizer,
        compute_metrics=compute_metrics if eval_examples else None,
        callbacks=[ForwardLogs()],
        rm_class=config.rm_class,
        positive_weight=config.positive_weight,
    )
    quiet_progress(trainer)
    trainer.train()
    if eval_examples:
        trainer.evaluate()  # the "after" evaluation, of the kept (best) model

    final = output_dir / "final"
    trainer.save_model(str(final))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(final))
        ValueModelInfo(rm_class=config.rm_class, min_rw=config.min_rw, max_rw=config.max_rw,
                       max_length=config.max_length,
                       base_model=str(base_model_path)).write(final)

    metrics: dict[str, float] = {}
    if evaluations:
        for phase, (_, values) in (("before", evaluations[0]), ("after", evaluations[-1])):
            metrics.update({f"{phase}/{name}": value for name, value in values.items()})
    best = trainer.state.best_model_checkpoint if keep_best else None
    return ValueTrainResult(final, metrics, trainer.state.log_history, len(train_examples),
                            len(eval_examples), evaluations, best)
