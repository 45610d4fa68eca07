"""The three VM classes, their text handling, batched forward passes, and the saved directory.

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

A saved VM directory holds the weights, the tokenizer and `restrl_value.json` (rm_class, min_rw,
max_rw, max_length): `load_value_model(dir)` reloads any class from it.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from restrl.value.config import RM_CLASSES
from restrl.value.metrics import scores_from_logits

log = logging.getLogger("restrl.value")

INFO_FILE = "restrl_value.json"
HEAD_FILE = "value_head.safetensors"  # standard_scalar: the linear head beside the saved LM


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


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int,
              side: str = "left") -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and position_ids (0 at each row's first real token)."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        input_ids[row, span] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, span] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids}


def accepts_position_ids(model: nn.Module) -> bool:
    return "position_ids" in inspect.signature(model.forward).parameters


# ----------------------------------------------------------------------------- models


class CausalLMValueModel(nn.Module):
    """standard_scalar VM: a causal LM whose logits at the last position (vocab-sized) feed
    nn.Linear(vocab, 1); saved as the LM (save_pretrained) plus `value_head.safetensors`."""

    def __init__(self, lm: Any) -> None:
        super().__init__()
        self.lm = lm
        self.config = lm.config  # the Trainer and DeepSpeed read hidden sizes from here
        self.head = nn.Linear(lm.get_output_embeddings().out_features, 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, **kwargs: Any) -> dict:
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
        state = dict(state_dict) if state_dict is not None else None
        lm_state = ({k[len("lm."):]: v for k, v in state.items() if k.startswith("lm.")}
                    if state is not None else None)
        head_state = ({k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
                      if state is not None else self.head.state_dict())
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.lm.save_pretrained(str(directory), state_dict=lm_state)
        save_file({k: v.detach().float().cpu().contiguous() for k, v in head_state.items()},
                  str(Path(directory, HEAD_FILE)))

    def load_weights(self, directory: str | Path) -> None:
        """Load LM + head weights saved by `save` into this module (the Trainer's checkpoint
        reloads; its own would match no key of the wrapper)."""
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
        model = cls(AutoModelForCausalLM.from_pretrained(str(directory), **lm_kwargs))
        model.head.load_state_dict(load_file(str(Path(directory, HEAD_FILE))))
        return model


def build_value_model(base_model_path: str, rm_class: str, pad_token_id: int,
                      **from_pretrained_kwargs: Any) -> nn.Module:
    """A trainable VM of `rm_class` on top of the checkpoint at `base_model_path`."""
    if rm_class == "standard_scalar":
        lm = AutoModelForCausalLM.from_pretrained(base_model_path, **from_pretrained_kwargs)
        lm.config.pad_token_id = pad_token_id
        return CausalLMValueModel(lm)
    if rm_class == "transformers_scalar":
        kwargs = {"num_labels": 1, "problem_type": "regression"}
    elif rm_class == "transformers_prob":
        kwargs = {"num_labels": 2, "problem_type": "single_label_classification"}
    else:
        raise ValueError(f"rm_class must be one of {RM_CLASSES}, got {rm_class!r}")
    with _without_load_reports():
        model, info = AutoModelForSequenceClassification.from_pretrained(
            base_model_path, pad_token_id=pad_token_id, output_loading_info=True, **kwargs,
            **from_pretrained_kwargs)
    _log_loading(base_model_path, info)
    model.config.pad_token_id = pad_token_id  # the pooling finds the last non-pad token by it
    return model


# The sequence-classification head a causal LM checkpoint lacks (Qwen2, Llama, ...: `score`).
NEW_HEAD_PREFIXES = ("score.", "classifier.")


class _DropLoadReports(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


@contextlib.contextmanager
def _without_load_reports() -> Iterator[None]:
    """transformers' load report of this call, replaced by `_log_loading`'s."""
    logger = logging.getLogger("transformers.modeling_utils")
    drop = _DropLoadReports()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _log_loading(path: str, info: Mapping[str, Any]) -> None:
    """A new head on a causal LM is the expected case (one info line); any other missing,
    unexpected or resized weight is a warning naming them."""
    missing = sorted(info.get("missing_keys") or ())
    head = [key for key in missing if key.startswith(NEW_HEAD_PREFIXES)]
    other = [key for key in missing if key not in head]
    unexpected = sorted(info.get("unexpected_keys") or ())
    mismatched = sorted(str(item[0]) for item in info.get("mismatched_keys") or ())
    if head:
        log.info("value model from %s: new head %s, initialised fresh (as expected on a "
                 "causal LM checkpoint)", path,
                 ", ".join(head))
    for what, keys in (("missing from the checkpoint, initialised fresh", other),
                       ("in the checkpoint but not used", unexpected),
                       ("resized", mismatched)):
        if keys:
            log.warning("value model from %s: weights %s: %s", path, what, ", ".join(keys))


# ----------------------------------------------------------------------------- inference


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def inference_dtype(device: str, dtype: str | None) -> torch.dtype:
    """`dtype` by name, else bfloat16 on a GPU that supports it, else float32."""
    if dtype is not None:
        return getattr(torch, dtype)
    on_cuda = device.startswith("cuda")
    return torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float32


def forward_in_batches(model: nn.Module, tokenizer: Any, texts: Sequence[str], max_length: int,
                       batch_size: int, device: str, add_special_tokens: bool = True
                       ) -> np.ndarray:
    """The model's output `logits` (rows x labels, float32) for each text, in order. Texts are
    batched by length to limit padding; padding follows the tokenizer's side, and
    position_ids are passed when the model's forward takes them."""
    encoded = encode_texts(tokenizer, texts, max_length, add_special_tokens)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    with_positions = accepts_position_ids(model)
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

    model: nn.Module
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
    info = ValueModelInfo.read(model_dir)
    device = pick_device(device)
    torch_dtype = inference_dtype(device, dtype)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(str(model_dir)))
    if info.rm_class == "standard_scalar":
        model = CausalLMValueModel.load(model_dir, dtype=torch_dtype)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir),
                                                                   dtype=torch_dtype)
        model.config.pad_token_id = tokenizer.pad_token_id
    model.to(device).eval()
    return LoadedValueModel(model, tokenizer, info, device)
