"""`snowcoder serve`: an OpenAI-compatible HTTP server for an HF causal LM (our phase checkpoints, SmolLM2, any
local folder or hub id), so that anything speaking the OpenAI API — our evaluator's endpoint backend, the phase-3
generator, EvalPlus, bigcode-evaluation-harness — can use it.

    snowcoder serve --model runs/x/phase3/train/checkpoint --port 8000 [--name snowcoder-final]
    curl http://127.0.0.1:8000/v1/completions -d '{"model": "snowcoder-final", "prompt": "def add(a, b):", "max_tokens": 32}'

Endpoints: GET /v1/models, POST /v1/completions (prompt: a string or a list; n; temperature; top_p; max_tokens;
stop; seed) and POST /v1/chat/completions (the tokenizer's chat template). One model, one request at a time (a
lock): the prompts of a request are generated as one batch with tasks.evaluate.generate_with. Greedy when
temperature is 0. Stop sequences are applied as OpenAI does (the text ends before the first one). For throughput
on GPUs, serve with vLLM or TGI instead; this server is for laptops, tests and small checkpoints.
"""
from __future__ import annotations

import argparse
import threading
import time
import uuid
from typing import Any

from pydantic import BaseModel, Field


class _Sampling(BaseModel):
    """The sampling fields both endpoints take (OpenAI defaults)."""

    model: str | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=64)
    stop: str | list[str] | None = None
    seed: int | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    max_tokens: int = Field(16, ge=1, le=32768)


class ChatRequest(_Sampling):
    messages: list[dict[str, Any]]
    max_tokens: int = Field(256, ge=1, le=32768)


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """`text` up to (not including) the earliest stop sequence, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i != -1), default=-1)
    return (text, False) if cut == -1 else (text[:cut], True)


def build_app(model_dir: str, name: str | None = None, batch_size: int = 16):
    import torch
    from fastapi import FastAPI

    from tasks.evaluate import generate_with, load_model

    model, tok = load_model(model_dir)
    served = name or model_dir.rstrip("/").rsplit("/", 1)[-1]
    lock = threading.Lock()
    app = FastAPI(title="snowcoder serve", version="1")

    def run(prompts: list[str], req, add_special_tokens: bool) -> tuple[list[dict], dict]:
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        expanded = [p for p in prompts for _ in range(req.n)]
        with lock:
            if req.seed is not None:
                torch.manual_seed(req.seed)
            outs = generate_with(model, tok, expanded, max_new_tokens=req.max_tokens, batch_size=batch_size,
                                 temperature=req.temperature, stops=tuple(stops),
                                 add_special_tokens=add_special_tokens)
        choices, completion_tokens = [], 0
        for i, (text, n_tokens) in enumerate(outs):
            text, stopped = cut_at_stop(text, stops)
            completion_tokens += n_tokens
            finish = "stop" if stopped or n_tokens < req.max_tokens else "length"
            choices.append({"index": i, "text": text, "finish_reason": finish})
        # OpenAI counts the prompt once per choice; the batch encoder counts each distinct prompt once
        prompt_tokens = req.n * sum(len(ids) for ids in tok(prompts, add_special_tokens=add_special_tokens)["input_ids"])
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        return choices, usage

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": served, "object": "model", "owned_by": "snowcoder"}]}

    @app.post("/v1/completions")
    def completions(req: CompletionRequest) -> dict:
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        choices, usage = run(prompts, req, add_special_tokens=True)
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": served, "choices": choices, "usage": usage}

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest) -> dict:
        prompt = tok.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True)
        choices, usage = run([prompt], req, add_special_tokens=False)
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": served, "usage": usage,
                "choices": [{"index": c["index"], "message": {"role": "assistant", "content": c["text"]},
                             "finish_reason": c["finish_reason"]} for c in choices]}

    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="snowcoder serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="HF model folder or hub id (e.g. a phase checkpoint)")
    parser.add_argument("--name", default=None, help="model id reported by /v1/models (default: the folder name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=16, help="prompts generated per batch")
    args = parser.parse_args(argv)
    app = build_app(args.model, args.name, args.batch_size)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
