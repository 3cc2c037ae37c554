"""The OpenAI-compatible client (tasks/llm_client.py) against a real server on 127.0.0.1 (`snowcoder serve` over a
micro checkpoint), directly and through a real flaky HTTP proxy that drops and throttles requests."""
from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
import time

import httpx
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from model.config import PRESETS, llama_config
from snowcoder import storage
from snowcoder.config import TokenizerConfig
from tasks.evaluate import generate_with, load_model
from tasks.llm_client import CompletionClient, LLMRequestError
from tasks.tokenize import train_tokenizer

pytestmark = pytest.mark.slow  # every test here talks to a real server (`snowcoder serve`) on 127.0.0.1

CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
PROMPTS = ["def add(a, b):", "class Stack:\n    def push(self, x):", "import os\n", "for i in range(10):"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("serve")
    texts = [f"def f{i}(x):\n    return x * {i} + {i % 3}\n\n\nclass C{i}:\n    pass\n" for i in range(60)]
    docs = storage.write_shards(pd.DataFrame({"content": texts}), str(root / "docs"), "train", 100)
    train_tokenizer(TokenizerConfig(vocab_size=400), docs, str(root / "tok"))
    tok = AutoTokenizer.from_pretrained(root / "tok")
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    cfg = llama_config(PRESETS["micro"]["model"], len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    return str(root / "model")


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve-log") / "serve.log"  # a file: a pipe nobody reads would fill and block
    log_file = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "snowcoder.cli", "serve", "--model", checkpoint, "--name", "micro",
                             "--port", str(port)], stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(log_path.read_text(errors="replace"))
        time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("snowcoder serve did not come up in 120 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log_file.close()


def test_greedy_completions_equal_local_generation(server, checkpoint):
    model, tok = load_model(checkpoint)
    local = [text for text, _ in generate_with(model, tok, PROMPTS, max_new_tokens=12, batch_size=4)]
    with CompletionClient(server, "micro", concurrency=3, api_key="unused") as client:
        assert client.models() == ["micro"]
        remote = client.complete(PROMPTS, max_tokens=12, temperature=0.0)
        assert [r[0] for r in remote] == local
        assert client.stats.requests == len(PROMPTS) and client.stats.retries == 0
        assert client.stats.completion_tokens > 0
        n3 = client.complete(PROMPTS[:1], max_tokens=6, temperature=0.8, n=3, seed=1)
        assert len(n3[0]) == 3
        replies = client.chat([[{"role": "user", "content": "write add"}]], max_tokens=5)
        assert len(replies) == 1 and isinstance(replies[0][0], str)


def test_usage_counts_prompt_tokens_once_per_choice(server, checkpoint):
    _, tok = load_model(checkpoint)
    prompt = PROMPTS[0]
    n_prompt = len(tok(prompt, add_special_tokens=True)["input_ids"])
    for n in (1, 3):
        reply = httpx.post(f"{server}/completions", json={"model": "micro", "prompt": [prompt, prompt + "  "], "n": n,
                                                          "max_tokens": 4, "temperature": 0.7, "seed": 1},
                           timeout=120).json()
        n_other = len(tok(prompt + "  ", add_special_tokens=True)["input_ids"])
        assert reply["usage"]["prompt_tokens"] == n * (n_prompt + n_other)
        assert len(reply["choices"]) == 2 * n
        assert reply["usage"]["total_tokens"] == reply["usage"]["prompt_tokens"] + reply["usage"]["completion_tokens"]


def test_stop_sequences_end_the_text_before_them(server):
    with CompletionClient(server, "micro") as client:
        full = client.complete(PROMPTS[:1], max_tokens=24, temperature=0.0)[0][0]
        if len(full) < 4:
            pytest.skip("the random micro model produced too little text to cut")
        stop = full[2:4]
        cut = client.complete(PROMPTS[:1], max_tokens=24, temperature=0.0, stop=[stop])[0][0]
        assert cut == full[: full.find(stop)]


class FaultyProxy(http.server.ThreadingHTTPServer):
    """A real HTTP proxy in front of the server. `fault(n)` decides for the n-th request (from 1): None = forward
    it, 503 / 429 = answer that status (Retry-After: 0), "drop" = close the connection without an answer, a number =
    hold the connection that many seconds (past a client timeout), then drop it. Counts requests, faults, holds."""

    def __init__(self, upstream: str, fault):
        self.upstream, self.fault, self.lock = upstream, fault, threading.Lock()
        self.count = self.failed = self.held = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with proxy.lock:
                    proxy.count += 1
                    what = proxy.fault(proxy.count)
                    proxy.failed += what is not None
                    proxy.held += isinstance(what, float)
                if what == "drop" or isinstance(what, float):
                    time.sleep(what if isinstance(what, float) else 0)
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                if what is not None:
                    self.send_response(what)
                    self.send_header("Retry-After", "0")
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                resp = httpx.post(proxy.upstream + self.path.removeprefix("/v1"), content=body,
                                  headers={"content-type": "application/json"}, timeout=60)
                self.send_response(resp.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

        super().__init__(("127.0.0.1", 0), Handler)


def every_3rd_503_4th_429_5th_dropped(n: int):
    return "drop" if n % 5 == 0 else 503 if n % 3 == 0 else 429 if n % 4 == 0 else None


def test_retries_through_a_flaky_proxy_give_the_same_texts(server):
    proxy = FaultyProxy(server, every_3rd_503_4th_429_5th_dropped)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}/v1"
        prompts = PROMPTS * 3
        with CompletionClient(server, "micro") as direct:
            expected = direct.complete(prompts, max_tokens=8, temperature=0.0)
        with CompletionClient(url, "micro", concurrency=4, base_backoff_s=0.01, max_backoff_s=0.05, seed=0) as client:
            got = client.complete(prompts, max_tokens=8, temperature=0.0)
            assert got == expected
            assert client.stats.retries == proxy.failed > 0
            assert client.stats.requests == len(prompts) + client.stats.retries and client.stats.failures == 0
    finally:
        proxy.shutdown()


def test_bounded_retries_and_non_retryable_errors_do_not_leak_the_key(server):
    secret = "sk-test-" + "x" * 24
    with CompletionClient(server, "micro", api_key=secret, max_retries=0) as client:
        assert secret not in repr(client)
        with pytest.raises(LLMRequestError) as err:  # 422: a malformed request is not retried
            client.post("/completions", {"prompt": "x", "max_tokens": 0})
        assert "422" in str(err.value) and secret not in str(err.value)
        assert client.stats.requests == 1 and client.stats.failures == 1
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: connection refused, retried, then given up
    with CompletionClient(dead, "micro", api_key=secret, max_retries=2, base_backoff_s=0.01) as client:
        with pytest.raises(LLMRequestError, match="gave up after 3 attempts") as err:
            client.complete(["x"], max_tokens=2)
        assert secret not in str(err.value) and client.stats.retries == 2


def test_snowcoder_eval_scores_an_endpoint_like_the_local_checkpoint(server, checkpoint, tmp_path):
    """`snowcoder eval --endpoint` (OpenAI-compatible completions) and `--model` (the same weights, loaded locally)
    give the same greedy completions and the same verdicts."""
    import json

    from snowcoder.cli import main

    outs = {}
    for name, args in (("local", ["--model", checkpoint]),
                       ("endpoint", ["--endpoint", server, "--endpoint-model", "micro"])):
        out = tmp_path / name
        assert main(["eval", *args, "--benchmarks", "humaneval", "--limit", "4", "--max-new-tokens", "12",
                     "--out", str(out)]) == 0
        outs[name] = out
    read = lambda p: [json.loads(line) for line in p.read_text().splitlines()]  # noqa: E731
    local, remote = read(outs["local"] / "samples.jsonl"), read(outs["endpoint"] / "samples.jsonl")
    assert [s["completion"] for s in remote] == [s["completion"] for s in local] and len(local) == 4
    assert [r["status"] for r in read(outs["endpoint"] / "results.jsonl")] == \
        [r["status"] for r in read(outs["local"] / "results.jsonl")]
    manifest = json.loads((outs["endpoint"] / "manifest.json").read_text())
    assert manifest["stats"]["source"] == server and "humaneval_pass@1" in manifest["counts"]
