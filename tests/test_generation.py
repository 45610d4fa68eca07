"""restrl.generation: config, hf backend, the OpenAI-compatible server and client.

A tiny random Qwen2 model and a small BPE tokenizer are built locally (no hub). Its samples
are random text, which is all these tests need: shapes, stops, seeds, usage, HTTP behaviour.
"""

from __future__ import annotations

import copy
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from restrl.generation import (
    GenerationConfig,
    GenerationError,
    Generator,
    cut_at_stop,
    make_generator,
)

PROMPTS = ["def add(a, b):\n", "x = [1", "for i in range(10):\n    print(i)\n"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_model(path: Path) -> Path:
    """A byte-level BPE tokenizer (ASCII corpus, so samples decode cleanly) + a random Qwen2."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    corpus = [
        "def add(a, b):\n    return a + b\n",
        "for i in range(10):\n    print(i * i)\n",
        "x = [1, 2, 3]\nif x:\n    y = len(x)\n",
    ] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=96, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )
    config = Qwen2Config(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def hf(model_dir: Path) -> Generator:
    return make_generator("hf", str(model_dir), device="cpu", batch_size=2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(app: object) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a thread; yields its /v1 base URL."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def base_url(hf: Generator) -> Iterator[str]:
    from restrl.generation.server import create_app

    with serve(create_app(hf, "tiny", api_key="sekret")) as url:
        yield url


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("RESTRL_API_KEY", "sekret")


# --- contract -------------------------------------------------------------------------------


def test_config_defaults_and_validation() -> None:
    cfg = GenerationConfig()
    assert (cfg.n, cfg.temperature, cfg.top_p, cfg.max_tokens, cfg.stop, cfg.seed) == (
        1, 0.7, 1.0, 512, (), None,
    )  # fmt: skip
    assert GenerationConfig(stop="```").stop == ("```",)
    assert cfg.with_overrides(n=4, stop=["a", ""]).stop == ("a",)
    for bad in ({"n": 0}, {"temperature": -1}, {"top_p": 0}, {"max_tokens": 0}):
        with pytest.raises(ValueError):
            GenerationConfig(**bad)
    with pytest.raises(TypeError):
        cfg.with_overrides(nonsense=1)


def test_cut_at_stop() -> None:
    assert cut_at_stop("a = 1\n```\nmore", ["```", "\n"]) == ("a = 1", True)
    assert cut_at_stop("ab```", ["`", "```"]) == ("ab", True)
    assert cut_at_stop("no stop", ["```"]) == ("no stop", False)


def test_usage_split_when_the_server_gives_only_a_total() -> None:
    from restrl.generation.openai_api import _split_tokens

    assert _split_tokens(10, ["a", "bbbb"]) == [2, 8]
    assert sum(_split_tokens(7, ["ab", "", "abc"])) == 7


def test_import_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, restrl.generation\n"
        "heavy = {'torch', 'transformers', 'vllm', 'httpx'} & set(sys.modules)\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_factory_rejects_unknown_backend_and_guards_vllm() -> None:
    with pytest.raises(ValueError, match="unknown generation backend"):
        make_generator("nope", "m")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="vllm"):
            make_generator("vllm", "m")


# --- hf backend -----------------------------------------------------------------------------


def test_hf_returns_n_samples_with_usage(hf: Generator) -> None:
    result = hf.generate(PROMPTS, n=3, max_tokens=12, temperature=1.0, seed=0)
    assert [len(row) for row in result.samples] == [3, 3, 3]
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    assert result.completion_tokens == sum(s.tokens for row in result.samples for s in row)
    for sample in (s for row in result.samples for s in row):
        assert 0 <= sample.tokens <= 12
        assert sample.finish_reason == ("length" if sample.tokens == 12 else "stop")
    assert hf.generate([]).samples == []


def test_hf_stop_strings_cut_like_post_hoc_cutting(hf: Generator) -> None:
    """Same seed with and without a stop: the stopped text is the free text cut at the stop."""
    cfg = GenerationConfig(n=3, max_tokens=24, temperature=1.0, seed=7)
    free = hf.generate(PROMPTS, cfg)
    counts = Counter(ch for row in free.texts for text in row for ch in set(text))
    stop = counts.most_common(1)[0][0]  # the character found in the most samples
    stopped = hf.generate(PROMPTS, cfg.with_overrides(stop=(stop, "@@")))
    cut = 0
    for free_row, row in zip(free.samples, stopped.samples, strict=True):
        for f, s in zip(free_row, row, strict=True):
            assert stop not in s.text
            assert s.text == f.text.split(stop)[0]
            if stop in f.text:
                cut += 1
                assert s.finish_reason == "stop"
                assert 1 <= s.tokens <= f.tokens
    assert cut >= 3


def test_stop_watch_decoding_matches_the_tokenizers_own_decode(hf: Generator) -> None:
    """decode_texts takes the Rust tokenizer's shortcut only where it gives batch_decode's
    text: special tokens dropped, no space clean-up; a class that decodes its own way keeps
    its own decode."""
    from restrl.generation.hf import decode_texts

    tokenizer = hf.tokenizer
    ids = tokenizer(["x = a . b  # ok", "def f(y):\n    return y"]).input_ids
    rows = [row + [tokenizer.eos_token_id] for row in ids] + [[], ids[0][:1]]
    own = tokenizer.batch_decode(rows, skip_special_tokens=True,
                                 clean_up_tokenization_spaces=False)
    assert decode_texts(tokenizer, rows) == own

    class Shouting(type(tokenizer)):
        def _decode(self, *args: object, **kwargs: object) -> str:
            return super()._decode(*args, **kwargs).upper()

    shouting = copy.copy(tokenizer)
    shouting.__class__ = Shouting
    assert decode_texts(shouting, rows) == [text.upper() for text in own]


def test_hf_seed_repeats_and_leaves_global_rng_alone(hf: Generator) -> None:
    import torch

    cfg = GenerationConfig(n=2, max_tokens=16, temperature=1.0, seed=123)
    state = torch.get_rng_state()
    first = hf.generate(PROMPTS, cfg).texts
    assert torch.equal(torch.get_rng_state(), state)
    assert hf.generate(PROMPTS, cfg).texts == first
    assert hf.generate(PROMPTS, cfg.with_overrides(seed=124)).texts != first
    greedy = GenerationConfig(max_tokens=8, temperature=0.0)
    assert hf.generate(PROMPTS, greedy).texts == hf.generate(PROMPTS, greedy).texts


def test_hf_accepts_a_loaded_model_and_formats_chat(hf: Generator) -> None:
    from restrl.generation.hf import HFGenerator

    side = hf.tokenizer.padding_side
    again = HFGenerator(hf.model, tokenizer=hf.tokenizer, batch_size=2)
    cfg = GenerationConfig(max_tokens=6, seed=1)
    assert again.generate(PROMPTS, cfg).texts == hf.generate(PROMPTS, cfg).texts
    prompt = again.format_chat([{"role": "user", "content": "hi"}])
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert hf.tokenizer.padding_side == side  # a shared tokenizer is left as it was
    with pytest.raises(ValueError, match="empty"):
        again.generate(["x", ""], cfg)


# --- server + openai backend ----------------------------------------------------------------


@pytest.mark.parametrize("per_request", [1, 3])
def test_openai_backend_matches_hf_over_loopback(
    hf: Generator, base_url: str, api_key: None, per_request: int
) -> None:
    cfg = GenerationConfig(n=2, max_tokens=10, temperature=1.0, seed=5, stop=("\n",))
    with make_generator(
        "openai", "tiny", base_url=base_url, prompts_per_request=per_request, max_concurrency=2
    ) as client:
        result = client.generate(PROMPTS, cfg)
    assert [len(row) for row in result.samples] == [2, 2, 2]
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    if per_request == len(PROMPTS):  # one request = the same generate call as hf's
        direct = hf.generate(PROMPTS, cfg)
        assert result.samples == direct.samples
        assert result.prompt_tokens == direct.prompt_tokens


def test_openai_chat_endpoint(base_url: str, api_key: None) -> None:
    with make_generator("openai", "tiny", base_url=base_url, chat=True) as client:
        result = client.generate(["hello", "world"], n=2, max_tokens=5, seed=0)
    assert [len(row) for row in result.samples] == [2, 2]
    assert result.completion_tokens > 0


def test_server_lists_models_and_validates(base_url: str) -> None:
    import httpx

    headers = {"Authorization": "Bearer sekret"}
    models = httpx.get(f"{base_url}/models").json()
    assert models["data"][0]["id"] == "tiny"
    reply = httpx.post(
        f"{base_url}/completions",
        json={"prompt": ["a", "b"], "n": 2, "max_tokens": 3, "seed": 1},
        headers=headers,
    ).json()
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2, 3]
    assert reply["usage"]["total_tokens"] > 0


def test_bad_request_is_reported_not_retried(base_url: str, api_key: None) -> None:
    with make_generator("openai", "tiny", base_url=base_url, backoff=0.01) as client:
        with pytest.raises(GenerationError) as err:
            client.generate(["x"], temperature=3.0, max_tokens=2)  # the server allows <= 2
    assert err.value.status == 400 and err.value.attempts == 1
    assert f"{base_url}/completions" in str(err.value) and "temperature" in str(err.value)


def test_missing_api_key_is_401(base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESTRL_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with make_generator("openai", "tiny", base_url=base_url) as client:
        with pytest.raises(GenerationError, match="HTTP 401") as err:
            client.generate(["x"], max_tokens=2)
    assert err.value.attempts == 1


def test_repeated_server_errors_give_up_with_the_message(hf: Generator) -> None:
    from restrl.generation.server import create_app

    with serve(create_app(hf, "tiny", fail_first=100, fail_status=500)) as url:
        client = make_generator("openai", "tiny", base_url=url, max_retries=2, backoff=0.01)
        with client, pytest.raises(GenerationError) as err:
            client.generate(["x"], max_tokens=2)
    assert err.value.status == 500 and err.value.attempts == 3
    assert "injected failure" in str(err.value) and url in str(err.value)


def test_connection_refused_is_retried_then_reported() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    client = make_generator("openai", "m", base_url=url, max_retries=1, backoff=0.01)
    with client, pytest.raises(GenerationError, match="ConnectError") as err:
        client.generate(["x"], max_tokens=2)
    assert err.value.status is None and err.value.attempts == 2


def test_cli_server_with_injected_503s_is_retried(model_dir: Path, tmp_path: Path) -> None:
    """`python -m restrl.generation.server` fails its first 2 requests; the client retries."""
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "restrl.generation.server", "--model", str(model_dir)]
    cmd += ["--port", str(port), "--device", "cpu", "--fail-first", "2"]
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "server did not start"
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        with make_generator("openai", str(model_dir), base_url=f"{url}/v1", backoff=0.01) as c:
            result = c.generate(PROMPTS[:2], n=2, max_tokens=6, seed=3)
        assert [len(row) for row in result.samples] == [2, 2]
        assert result.completion_tokens > 0
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
