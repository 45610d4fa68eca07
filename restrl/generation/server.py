"""A small OpenAI-compatible server over the `hf` backend, for machines without vLLM.

    python -m restrl.generation.server --model DIR [--host 127.0.0.1] [--port 8000]

Endpoints: GET /v1/models, GET /health, POST /v1/completions (prompt: string or list of
strings, answered in one batch), POST /v1/chat/completions (rendered with the tokenizer's chat
template and tokenised without adding special tokens: the template writes its own BOS).
Request defaults follow the OpenAI API (temperature 1, max_tokens 16). vLLM's top_k, min_p and
repetition_penalty are accepted at their neutral values only (what restrl's clients send); any
other value is refused with 400, since this server does not implement them. Requests are
served one at a time (a lock around the model); send prompt lists to batch. Errors come back
as {"error": {"message", "type"}} with status 400 (bad request), 401, or 500.
`--fail-first K` answers the first K generation requests with `--fail-status` (default 503):
fault injection for testing clients' retries.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from restrl.generation.base import GenerationConfig, GenerationResult

MAX_N = 128


class _SamplingFields(BaseModel):
    model: str | None = None
    n: int = Field(1, ge=1, le=MAX_N)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(16, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    # vLLM's extensions, accepted only where they change nothing (see `unsupported`).
    top_k: int = -1
    min_p: float = 0.0
    repetition_penalty: float = 1.0

    def unsupported(self) -> list[str]:
        """The vLLM extension fields set to a value this server does not implement."""
        bad = []
        if self.top_k not in (-1, 0):
            bad.append(f"top_k={self.top_k} (only -1 or 0: no top-k)")
        if self.min_p != 0.0:
            bad.append(f"min_p={self.min_p} (only 0)")
        if self.repetition_penalty != 1.0:
            bad.append(f"repetition_penalty={self.repetition_penalty} (only 1)")
        return bad

    def config(self) -> GenerationConfig:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return GenerationConfig(
            n=self.n,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            stop=tuple(stop),
            seed=self.seed,
        )


class CompletionRequest(_SamplingFields):
    prompt: str | list[str]


class ChatMessage(BaseModel):
    role: str
    content: str


class ChatRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)


class ApiError(Exception):
    """An error answered as {"error": {...}} with the given status."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status)


def _usage(result: GenerationResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


class _Service:
    """The model behind a lock (one generate at a time), the auth check and fault injection."""

    def __init__(
        self,
        generator: Any,
        model_name: str,
        api_key: str | None,
        fail_first: int,
        fail_status: int,
    ) -> None:
        self.generator = generator
        self.model_name = model_name
        self.api_key = api_key
        self.fail_left = fail_first
        self.fail_status = fail_status
        self.lock = threading.Lock()

    def check(self, request: Request, body: _SamplingFields) -> None:
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            raise ApiError(401, "invalid or missing API key", "authentication_error")
        with self.lock:
            if self.fail_left > 0:
                self.fail_left -= 1
                raise ApiError(self.fail_status, "injected failure (--fail-first)", "server_error")
        if body.stream:
            raise ApiError(400, "stream=true is not supported by this server")
        if bad := body.unsupported():
            raise ApiError(400, "not supported by this server: " + ", ".join(bad))

    def generate(
        self, prompts: list[str], body: _SamplingFields, rendered: bool = False
    ) -> GenerationResult:
        """Samples for `prompts`; `rendered` prompts come from a chat template that wrote its
        own special tokens, so none are added when they are tokenised."""
        try:
            config = body.config()
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        generate = getattr(self.generator, "generate_rendered", None) if rendered else None
        with self.lock:
            try:
                return (generate or self.generator.generate)(prompts, config)
            except ValueError as exc:  # e.g. an empty prompt: the request's fault
                raise ApiError(400, str(exc)) from None

    def envelope(self, kind: str, choices: list[dict[str, Any]], result: GenerationResult) -> dict:
        return {
            "id": f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": _usage(result),
        }


def create_app(
    generator: Any,
    model_name: str,
    *,
    api_key: str | None = None,
    fail_first: int = 0,
    fail_status: int = 503,
) -> FastAPI:
    """The FastAPI app over `generator` (any Generator; chat needs a `format_chat` method)."""
    service = _Service(generator, model_name, api_key, fail_first, fail_status)
    app = FastAPI(title="restrl generation server")

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.kind)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # OpenAI answers 400, not FastAPI's 422; name the offending fields.
        parts = [f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors()]
        return _error(400, "; ".join(parts) or "invalid request", "invalid_request_error")

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"{type(exc).__name__}: {exc}", "server_error")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        card = {"id": model_name, "object": "model", "created": 0, "owned_by": "restrl"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/completions")
    def completions(body: CompletionRequest, request: Request) -> dict[str, Any]:
        service.check(request, body)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise ApiError(400, "prompt must not be empty")
        result = service.generate(prompts, body)
        choices = [
            {
                "index": i * body.n + j,  # OpenAI's order for a list of prompts
                "text": s.text,
                "finish_reason": s.finish_reason,
                "logprobs": None,
                "completion_tokens": s.tokens,  # extension: exact per-choice token count
            }
            for i, row in enumerate(result.samples)
            for j, s in enumerate(row)
        ]
        return service.envelope("text_completion", choices, result)

    @app.post("/v1/chat/completions")
    def chat_completions(body: ChatRequest, request: Request) -> dict[str, Any]:
        service.check(request, body)
        if not hasattr(generator, "format_chat"):
            raise ApiError(400, "this backend has no chat template")
        prompt = generator.format_chat([m.model_dump() for m in body.messages])
        result = service.generate([prompt], body, rendered=True)
        choices = [
            {
                "index": j,
                "message": {"role": "assistant", "content": s.text},
                "finish_reason": s.finish_reason,
                "completion_tokens": s.tokens,
            }
            for j, s in enumerate(result.samples[0])
        ]
        return service.envelope("chat.completion", choices, result)

    return app


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model directory or hub id")
    parser.add_argument(
        "--served-model-name", help="name reported by /v1/models (default: --model)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--api-key", help="require this bearer token")
    parser.add_argument("--fail-first", type=int, default=0, help="fail the first K requests")
    parser.add_argument("--fail-status", type=int, default=503)
    parser.add_argument("--log-level", default="warning")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from restrl.generation.hf import HFGenerator

    args = _parse_args(argv)
    generator = HFGenerator(
        args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size
    )
    app = create_app(
        generator,
        args.served_model_name or args.model,
        api_key=args.api_key,
        fail_first=args.fail_first,
        fail_status=args.fail_status,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
