"""The tiny model's tokenizer: byte-level BPE trained on local text, with a ChatML template.

Apart from the build (`restrl.toy.tiny_model`): turning text into tokens needs `tokenizers` and
transformers' Qwen2 tokenizer, but no model and no training loop.
"""

from __future__ import annotations

import json
import sysconfig
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)
# ChatML, as Qwen2 uses it. The assistant turn ends with <|im_end|>, the eos token.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def stdlib_texts(max_bytes: int) -> list[str]:
    """Python sources of the local standard library, in sorted order, up to `max_bytes`."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts, total = [], 0
    for file in sorted(stdlib.glob("*.py")):
        if total >= max_bytes:
            break
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        text = text[: max_bytes - total]
        texts.append(text)
        total += len(text)
    return texts


def build_tokenizer(texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2,
                    model_max_length: int = 1024) -> Any:
    """A byte-level BPE tokenizer trained on `texts`, with the ChatML chat template.

    It is a `Qwen2Tokenizer` (a `PreTrainedTokenizerFast`) with Qwen2's own normalizer and
    pre-tokenizer (NFC, Qwen2's split regex - one token per digit - then byte-level): transformers
    always loads a qwen2 model directory's tokenizer as `Qwen2Tokenizer`, which rebuilds that
    pipeline around the saved vocabulary and merges, so training with it keeps the tokenizer the
    build used and the one `AutoTokenizer.from_pretrained` returns identical.
    eos = <|im_end|> (a reply ends there), pad = <|endoftext|>; padding on the left, as batched
    generation needs.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    trained = json.loads(backend.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)
              for m in trained["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=trained["vocab"],
        merges=merges,
        unk_token=None,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        extra_special_tokens=[IM_START],
        padding_side="left",
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
