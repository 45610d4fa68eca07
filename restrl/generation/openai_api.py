"""OpenAI-compatible HTTP backend (vLLM server, `restrl.generation.server`, hosted APIs).

Plain httpx, no `openai` package. Requests run concurrently on a thread pool; each one is
retried with exponential backoff on 408/429/5xx and connection errors, and any other failure
raises `GenerationError` naming the URL, the status and the server's message.
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from restrl.generation.base import (
    NEUTRAL_SAMPLING,
    BaseGenerator,
    FinishReason,
    GenerationConfig,
    GenerationError,
    GenerationResult,
    Sample,
    cut_at_stop,
    make_result,
)

DEFAULT_BASE_URL = "http://localhost:8000/v1"
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def resolve_api_key(api_key: str | None) -> str | None:
    """Explicit key, else $RESTRL_API_KEY, else $OPENAI_API_KEY (local servers need none)."""
    return api_key or os.environ.get("RESTRL_API_KEY") or os.environ.get("OPENAI_API_KEY")


def resolve_base_url(base_url: str | None) -> str:
    """Explicit URL, else $RESTRL_API_BASE, else $OPENAI_BASE_URL, else localhost:8000/v1."""
    url = base_url or os.environ.get("RESTRL_API_BASE") or os.environ.get("OPENAI_BASE_URL")
    return (url or DEFAULT_BASE_URL).rstrip("/")


def _server_message(response: httpx.Response) -> str:
    """The error text an OpenAI-style server put in its body ({"error": {"message": ...}})."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body))
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
        return str(error)[:500]
    return str(body)[:500]


def _split_tokens(total: int, texts: list[str]) -> list[int]:
    """Share a request's completion tokens among its choices in proportion to text length.

    The OpenAI API reports only the total; a choice with an exact count is used as is.
    """
    weights = [max(len(t), 1) for t in texts]
    shares = [total * w // sum(weights) for w in weights]
    shares[-1] += total - sum(shares)
    return shares


class OpenAIGenerator(BaseGenerator):
    """Sample from an OpenAI-compatible `/completions` (or `/chat/completions`) endpoint.

    model: the model name the server serves.
    base_url: the API root, e.g. "http://host:8000/v1" (see `resolve_base_url` for defaults).
    api_key: bearer token (see `resolve_api_key` for the environment fallbacks).
    chat: use /chat/completions, each prompt becoming one user message; the server applies
        its chat template. Default: /completions with the prompt as given.
    prompts_per_request: completions mode may send several prompts in one request (the OpenAI
        API and vLLM accept a list), which lets the server batch them; 1 is the most portable.
    max_concurrency: requests in flight at once.
    max_retries: retries after the first attempt of a request, for retryable failures.
    backoff, max_backoff: the k-th retry waits about backoff * 2**k seconds (jittered, at most
        max_backoff), or what a Retry-After header asks, within max_backoff.
    timeout: seconds per HTTP request.
    neutral_sampling: also send top_k, min_p and repetition_penalty at their neutral values
        (`NEUTRAL_SAMPLING`). A vLLM server fills the fields it is not sent from the model's
        generation config (Qwen: top_k 20), so without them it samples another distribution
        than the hf and vllm backends. vLLM and restrl's server accept them; set False for an
        API that rejects unknown fields (api.openai.com).
    add_special_tokens: None sends nothing (the server's default: vLLM adds the BOS); False
        asks a vLLM server not to add special tokens, for prompts already rendered by a chat
        template that writes its own BOS (Llama, DeepSeek).
    extra_body: extra JSON fields for every request; they win over the fields above.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        chat: bool = False,
        prompts_per_request: int = 1,
        max_concurrency: int = 8,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 600.0,
        neutral_sampling: bool = True,
        add_special_tokens: bool | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        if chat and prompts_per_request != 1:
            raise ValueError("chat requests carry one conversation; use prompts_per_request=1")
        self.model = model
        self.base_url = resolve_base_url(base_url)
        self.chat = chat
        self.prompts_per_request = max(1, prompts_per_request)
        self.max_concurrency = max(1, max_concurrency)
        self.max_retries = max(0, max_retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.neutral_sampling = neutral_sampling
        self.add_special_tokens = add_special_tokens
        self.extra_body = dict(extra_body or {})
        key = resolve_api_key(api_key)
        self._client = httpx.Client(
            timeout=timeout,
            headers={"Authorization": f"Bearer {key}"} if key else {},
            limits=httpx.Limits(max_connections=self.max_concurrency),
        )

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions" if self.chat else f"{self.base_url}/completions"

    def close(self) -> None:
        self._client.close()

    def _generate(self, prompts: list[str], config: GenerationConfig) -> GenerationResult:
        step = self.prompts_per_request
        groups = [prompts[i : i + step] for i in range(0, len(prompts), step)]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(groups))) as pool:
            answers = list(pool.map(lambda group: self._request(group, config), groups))
        samples = [row for rows, _ in answers for row in rows]
        prompt_tokens = sum(usage.get("prompt_tokens", 0) for _, usage in answers)
        return make_result(samples, prompt_tokens)

    def _body(self, prompts: list[str], config: GenerationConfig) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "n": config.n,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "max_tokens": config.max_tokens,
        }
        if self.chat:
            body["messages"] = [{"role": "user", "content": prompts[0]}]
        else:
            body["prompt"] = prompts[0] if len(prompts) == 1 else prompts
        if config.stop:
            body["stop"] = list(config.stop)
        if config.seed is not None:
            body["seed"] = config.seed
        if self.neutral_sampling:
            body |= NEUTRAL_SAMPLING
        if self.add_special_tokens is not None:
            body["add_special_tokens"] = self.add_special_tokens
        return body | self.extra_body

    def _request(
        self, prompts: list[str], config: GenerationConfig
    ) -> tuple[list[list[Sample]], dict[str, int]]:
        """One request: its samples grouped per prompt, and its usage block."""
        reply = self._post(self._body(prompts, config))
        choices = sorted(reply.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != len(prompts) * config.n:
            raise GenerationError(
                f"expected {len(prompts) * config.n} choices, got {len(choices)}", url=self.url
            )
        usage = reply.get("usage") or {}
        samples = self._samples(choices, usage.get("completion_tokens", 0), config)
        return [samples[k : k + config.n] for k in range(0, len(samples), config.n)], usage

    def _samples(
        self, choices: list[dict[str, Any]], total_tokens: int, config: GenerationConfig
    ) -> list[Sample]:
        texts = [_choice_text(c, self.chat) for c in choices]
        shares = _split_tokens(total_tokens, texts)
        samples = []
        for choice, text, share in zip(choices, texts, shares, strict=True):
            # Servers leave the stop string out already; cutting again guards those that don't.
            text, _ = cut_at_stop(text, config.stop)
            reason: FinishReason = "length" if choice.get("finish_reason") == "length" else "stop"
            tokens = choice.get("completion_tokens", share)  # exact count from our own server
            samples.append(Sample(text, int(tokens), reason))
        return samples

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries; the parsed JSON reply, or GenerationError."""
        status: int | None = None
        message = ""
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TransportError as exc:  # refused, reset, timed out: worth retrying
                status, message = None, f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return self._json(response)
                status, message = response.status_code, _server_message(response)
                if status not in RETRYABLE_STATUS:
                    raise GenerationError(
                        message, url=self.url, status=status, attempts=attempt + 1
                    )
                retry_after = _retry_after(response)
            if attempt + 1 < attempts:
                time.sleep(self._delay(attempt, retry_after))
        raise GenerationError(message, url=self.url, status=status, attempts=attempts)

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            reply = response.json()
        except ValueError:
            raise GenerationError(
                f"reply is not JSON: {response.text[:200]!r}",
                url=self.url,
                status=response.status_code,
            ) from None
        if not isinstance(reply, dict):
            raise GenerationError(f"reply is not a JSON object: {reply!r:.200}", url=self.url)
        return reply

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        # Jitter spreads out the retries of many concurrent requests that failed together.
        return min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)


def _choice_text(choice: dict[str, Any], chat: bool) -> str:
    text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
    return text or ""


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None  # absent, or an HTTP date: fall back to exponential backoff
