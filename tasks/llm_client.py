"""A client for any OpenAI-compatible server (vLLM, TGI, llama.cpp, SGLang, `snowcoder serve`, hosted APIs).

    client = CompletionClient("http://127.0.0.1:8000/v1", model="my-model", concurrency=16)
    texts = client.complete(prompts, max_tokens=512, temperature=0.0, stop=["\\ndef "])       # /v1/completions
    replies = client.chat([[{"role": "user", "content": "..."}]], max_tokens=512)             # /v1/chat/completions

What it does for long runs against a shared server:
  - at most `concurrency` requests in flight (a thread pool; results come back in input order);
  - retries on 429, 5xx, timeouts and dropped connections, with exponential backoff and full jitter
    (delay = uniform(0, min(max_backoff_s, base_backoff_s * 2**attempt)), AWS-style), honouring Retry-After, at most
    `max_retries` retries per request; other 4xx are not retried (the request itself is wrong) and raise
    LLMRequestError with the server's message;
  - the API key comes from an environment variable (`api_key_env`, default OPENAI_API_KEY) or a Prefect Secret block
    (`secret_block`), is sent only as the Authorization header, and never appears in an exception, a log line or
    repr(client).
Counters (requests, retries, failures, prompt/completion tokens from the server's `usage`) are kept in `stats`.
"""
from __future__ import annotations

import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

log = logging.getLogger("snowcoder.llm_client")

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class LLMRequestError(RuntimeError):
    """A request that failed for good (a non-retryable status, or retries exhausted)."""


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for key, value in deltas.items():
                setattr(self, key, getattr(self, key) + value)

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("requests", "retries", "failures", "prompt_tokens", "completion_tokens")}


def resolve_api_key(api_key_env: str | None = "OPENAI_API_KEY", secret_block: str | None = None) -> str | None:
    """The key from a Prefect Secret block (when named) or an environment variable; None when neither is set."""
    if secret_block:
        from prefect.blocks.system import Secret

        return Secret.load(secret_block).get()
    return os.environ.get(api_key_env) if api_key_env else None


class CompletionClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        secret_block: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 6,
        base_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        seed: int | None = None,
    ):
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.concurrency, self.max_retries = concurrency, max_retries
        self.base_backoff_s, self.max_backoff_s = base_backoff_s, max_backoff_s
        self.stats = ClientStats()
        self._rng = random.Random(seed)
        key = api_key if api_key is not None else resolve_api_key(api_key_env, secret_block)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s,
                                  limits=httpx.Limits(max_connections=concurrency))

    def __repr__(self) -> str:  # never the key
        return f"CompletionClient({self.base_url!r}, model={self.model!r}, concurrency={self.concurrency})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "CompletionClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ requests
    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(self.max_backoff_s, max(0.0, float(retry_after)))
            except ValueError:
                pass
        return self._rng.uniform(0.0, min(self.max_backoff_s, self.base_backoff_s * 2**attempt))

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST with retries; the decoded JSON body of the first successful response."""
        last = ""
        for attempt in range(self.max_retries + 1):
            self.stats.add(requests=1, retries=1 if attempt else 0)
            retry_after = None
            try:
                resp = self._http.post(path, json=payload)
            except (httpx.TimeoutException, httpx.TransportError) as exc:  # timeouts, refused / dropped connections
                last = f"{type(exc).__name__}"
            else:
                if resp.status_code < 300:
                    body = resp.json()
                    usage = body.get("usage") or {}
                    self.stats.add(prompt_tokens=int(usage.get("prompt_tokens") or 0),
                                   completion_tokens=int(usage.get("completion_tokens") or 0))
                    return body
                last = f"HTTP {resp.status_code}: {resp.text[:300]}"
                if resp.status_code not in RETRY_STATUS:
                    self.stats.add(failures=1)
                    raise LLMRequestError(f"{self.base_url}{path} refused the request: {last}")
                retry_after = resp.headers.get("retry-after")
            if attempt < self.max_retries:
                delay = self._delay(attempt, retry_after)
                log.info("%s%s: %s; retry %d/%d in %.2fs", self.base_url, path, last, attempt + 1, self.max_retries,
                         delay)
                time.sleep(delay)
        self.stats.add(failures=1)
        raise LLMRequestError(f"{self.base_url}{path}: gave up after {self.max_retries + 1} attempts ({last})")

    def _map(self, fn, items: list) -> list:
        if len(items) <= 1 or self.concurrency == 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="snowcoder-llm") as pool:
            return list(pool.map(fn, items))

    # ------------------------------------------------------------------ endpoints
    def complete(self, prompts: list[str], *, max_tokens: int, temperature: float = 0.0, n: int = 1,
                 stop: list[str] | None = None, top_p: float = 1.0, seed: int | None = None) -> list[list[str]]:
        """/v1/completions: `n` texts per prompt (only the new text), in input order; one request per prompt."""
        def one(prompt: str) -> list[str]:
            payload = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": temperature,
                       "top_p": top_p, "n": n, **({"stop": list(stop)[:4]} if stop else {}),
                       **({"seed": seed} if seed is not None else {})}
            choices = sorted(self.post("/completions", payload)["choices"], key=lambda c: c.get("index", 0))
            return [c.get("text") or "" for c in choices]

        return self._map(one, list(prompts))

    def chat(self, conversations: list[list[dict[str, str]]], *, max_tokens: int, temperature: float = 0.0,
             n: int = 1, stop: list[str] | None = None, top_p: float = 1.0, seed: int | None = None
             ) -> list[list[str]]:
        """/v1/chat/completions: `n` assistant replies per conversation, in input order."""
        def one(messages: list[dict[str, str]]) -> list[str]:
            payload = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                       "top_p": top_p, "n": n, **({"stop": list(stop)[:4]} if stop else {}),
                       **({"seed": seed} if seed is not None else {})}
            choices = sorted(self.post("/chat/completions", payload)["choices"], key=lambda c: c.get("index", 0))
            return [(c.get("message") or {}).get("content") or "" for c in choices]

        return self._map(one, list(conversations))

    def models(self) -> list[str]:
        resp = self._http.get("/models")
        resp.raise_for_status()
        return [m["id"] for m in resp.json().get("data", [])]
