"""Phase-3 generation throughput against a real OpenAI-compatible server: the server's saturation curve, then our
client and the synthesize stage at the chosen concurrency on the same prompts, and the client's efficiency.

    .venv/bin/python bench/synth_throughput.py [--model micro|smollm2] [--requests 48] [--max-tokens 64]
                                               [--levels 1,2,4,8] [--concurrency 8] [--repeats 2]

1. Starts `snowcoder serve` on 127.0.0.1 over a micro random checkpoint built here (default: a request takes
   milliseconds, so any overhead of the client shows) or SmolLM2-135M-Instruct from the embedded cache
   (`--model smollm2`, converted once by tasks.synthesize).
2. Builds the stage's own requests: seeds from standard-library files, their snippets, the default prompt template,
   the stage's /v1/chat/completions body (tasks.synthesize.chat_payload), greedy.
3. Saturation sweep with a plain httpx loop (N threads, each with its own connection, pulling requests from a shared
   queue) at each concurrency level: requests/s and output tokens/s (the server's `usage`).
4. At the chosen concurrency (--concurrency, default the sweep's best level): (a) tasks.llm_client.CompletionClient
   .chat on the same conversations; (b) the synthesize stage over the endpoint (requests, validation, durable records;
   its manifest's requests_per_s).
5. Prints efficiency = achieved requests/s / the best requests/s of the sweep (target >= 90%).

Each figure is the best of --repeats runs (a shared machine is noisy). `snowcoder serve` generates one request at a
time, so its curve is flat beyond the overlap of HTTP handling with generation; vLLM or TGI batch requests and scale.
"""
from __future__ import annotations

import argparse
import queue
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import pandas as pd  # noqa: E402

from snowcoder import storage  # noqa: E402
from snowcoder.config import DecontamConfig, SynthConfig  # noqa: E402
from snowcoder.manifest import Manifest  # noqa: E402
from tasks import synthesize as synth  # noqa: E402

CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"


def micro_checkpoint(root: Path) -> str:
    """A random `micro` Llama (2 layers, d=64, 4k positions) with a 400-token BPE and a chat template (HF folder)."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from model.config import PRESETS, llama_config
    from snowcoder.config import TokenizerConfig
    from tasks.tokenize import train_tokenizer

    texts = [Path(sysconfig.get_paths()["stdlib"], name).read_text() for name in ("colorsys.py", "bisect.py")]
    docs = storage.write_shards(pd.DataFrame({"content": texts * 10}), str(root / "docs"), "train", 100)
    train_tokenizer(TokenizerConfig(vocab_size=400), docs, str(root / "tok"))
    tok = AutoTokenizer.from_pretrained(root / "tok")
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    cfg = llama_config(PRESETS["micro"]["model"], len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    cfg.max_position_embeddings = 4096  # whole stage prompts (~1k tokens of this small vocabulary), not truncated
    LlamaForCausalLM(cfg).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    return str(root / "model")


def smollm2_checkpoint() -> str:
    """SmolLM2-135M-Instruct as an HF folder from the embedded cache (converted from the GGUF once)."""
    cached = storage.local_cache_dir() / synth.SMOLLM2_CACHE_NAME
    if not (cached / "config.json").is_file():
        synth._convert_gguf(synth._embedded_smollm2_dir(), cached)
    return str(cached)


def start_server(model_dir: str, name: str, log_file: Path) -> tuple[subprocess.Popen, str]:
    """`snowcoder serve` on a free 127.0.0.1 port, its output to log_file (a pipe nobody reads would fill up and
    block the server); (process, base URL) once /v1/models answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log_file, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "snowcoder.cli", "serve", "--model", model_dir, "--name", name,
                                 "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"snowcoder serve exited: {log_file.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("snowcoder serve did not come up in 300 s")


def stdlib_seeds(n: int, root: Path) -> Manifest:
    """n standard-library files as a scored phase-2 selection (score = a hash: a stable arbitrary order)."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[: n * 2]
    rows = []
    for i, path in enumerate(files):
        content = path.read_text(errors="replace")
        if content.strip():
            rows.append({"doc_id": f"std{i:04d}", "repo": "stdlib", "path": path.name, "language": "python",
                         "content": content, "size_bytes": len(content), "content_sha256": "",
                         "source": "bench", "score": (i * 2654435761 % 1000) / 1000})
    uris = storage.write_shards(pd.DataFrame(rows[:n]), str(root / "seeds"), "docs", 1000)
    return Manifest(stage="select", uris={"docs": uris}, digest="bench")


def stage_requests(cfg: SynthConfig, seeds: Manifest, model: str) -> list[dict]:
    """The /v1/chat/completions bodies the synthesize stage sends for these seeds (same seeds, snippets, template)."""
    template = synth.load_template(cfg.prompt_template)
    seed_docs = synth.select_seeds(storage.read_shards(seeds.shard_uris("docs")), cfg.n_seeds,
                                   cfg.seed_language_shares)
    jobs = synth.make_jobs(seed_docs, cfg)
    return [synth.chat_payload(model, template.messages(j.snippet.text, j.seed.language), cfg,
                               synth.request_seed(cfg, j.seed.doc_id, j.sample)) for j in jobs]


def plain_loop(url: str, payloads: list[dict], concurrency: int) -> tuple[float, float]:
    """(requests/s, output tokens/s) of `concurrency` threads posting the payloads with plain httpx."""
    todo: queue.Queue = queue.Queue()
    for p in payloads:
        todo.put(p)
    tokens = [0] * concurrency

    def worker(k: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as client:
            while True:
                try:
                    payload = todo.get_nowait()
                except queue.Empty:
                    return
                resp = client.post("/chat/completions", json=payload)
                resp.raise_for_status()
                tokens[k] += resp.json()["usage"]["completion_tokens"]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    return len(payloads) / seconds, sum(tokens) / seconds


def our_client(url: str, model: str, payloads: list[dict], concurrency: int) -> tuple[float, float]:
    """(requests/s, output tokens/s) of CompletionClient.chat on the same conversations."""
    from tasks.llm_client import CompletionClient

    p0 = payloads[0]
    with CompletionClient(url, model, api_key="unused", concurrency=concurrency) as client:
        t0 = time.perf_counter()
        client.chat([p["messages"] for p in payloads], max_tokens=p0["max_tokens"], temperature=p0["temperature"])
        seconds = time.perf_counter() - t0
        return len(payloads) / seconds, client.stats.completion_tokens / seconds


def stage_run(cfg: SynthConfig, seeds: Manifest, root: Path) -> tuple[float, float, dict]:
    """(requests/s, output tokens/s, counts) of the synthesize stage over the endpoint, from a fresh directory."""
    out = root / f"synth-{time.monotonic_ns()}"
    m = synth.synthesize(cfg, seeds, str(out), decontam_cfg=DecontamConfig())
    shutil.rmtree(out, ignore_errors=True)
    return m.counts["requests_per_s"], m.counts["output_tok_per_s"], m.counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("micro", "smollm2"), default="micro")
    ap.add_argument("--requests", type=int, default=48, help="requests per measurement (seed files)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--levels", default="1,2,4,8", help="concurrency levels of the sweep")
    ap.add_argument("--concurrency", type=int, default=None,
                    help="our client's concurrency (default: the sweep's best level, as a user would choose it)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = micro_checkpoint(root) if args.model == "micro" else smollm2_checkpoint()
        proc, url = start_server(model_dir, args.model, root / "serve.log")
        try:
            seeds = stdlib_seeds(args.requests, root)
            cfg = SynthConfig(endpoint=url, endpoint_model=args.model, n_seeds=args.requests,
                              max_new_tokens=args.max_tokens)
            payloads = stage_requests(cfg, seeds, args.model)
            plain_loop(url, payloads[: min(8, len(payloads))], 2)  # warm-up
            print(f"server: snowcoder serve, {args.model} model ({model_dir}), {len(payloads)} stage requests, "
                  f"max_tokens {args.max_tokens}, greedy; best of {args.repeats}")
            print(f"{'concurrency':>11}  {'requests/s':>10}  {'output tok/s':>12}")
            curve = {}
            for level in levels:
                curve[level] = max(plain_loop(url, payloads, level) for _ in range(args.repeats))
                print(f"{level:>11}  {curve[level][0]:>10.2f}  {curve[level][1]:>12.1f}")
            best_level = max(curve, key=lambda level: curve[level][0])
            best = curve[best_level]
            c = args.concurrency or best_level
            cfg = cfg.model_copy(update={"concurrency": c})
            client = max(our_client(url, args.model, payloads, c) for _ in range(args.repeats))
            runs = [stage_run(cfg, seeds, root) for _ in range(args.repeats)]
            stage = max(runs, key=lambda r: r[0])
            print(f"best of the sweep: {best[0]:.2f} requests/s, {best[1]:.1f} output tok/s (concurrency {best_level})")
            print(f"CompletionClient.chat at concurrency {c}: {client[0]:.2f} requests/s, {client[1]:.1f} output "
                  f"tok/s -> efficiency {client[0] / best[0]:.1%}")
            print(f"synthesize stage at concurrency {c}: {stage[0]:.2f} requests/s, {stage[1]:.1f} output tok/s -> "
                  f"efficiency {stage[0] / best[0]:.1%} (kept {stage[2]['kept']:g} of {stage[2]['generated']:g}, "
                  f"retries {stage[2]['retries']:g})")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
