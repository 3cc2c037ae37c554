"""Annotator scoring throughput: our scorer (tasks/annotate.py: windows batched by length, frozen encoder, linear
head) vs a plain transformers `pipeline("text-classification")` over the *exported* annotator (the HF model dir
annotate writes), on the same windows, same batch size, one after the other in this same run. Prints windows/s of
each, the ratio ours/theirs, and the largest score difference (the two must agree: same model).

Windows are real code: the top/middle/bottom windows of the Python files of this repository and of the standard
library (first --files files). The head is fitted on documented functions cut from those files vs their raw windows
(its values do not change the speed, only make the scores meaningful).

    .venv/bin/python bench/annotate_throughput.py [--encoder embedded:minilm] [--window 512] [--batch 32] [--files 300]
    .venv/bin/python bench/annotate_throughput.py --encoder Snowflake/snowflake-arctic-embed-m --batch 256  # GPU
"""
from __future__ import annotations

import argparse
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks import annotate as ann  # noqa: E402


def code_files(n: int) -> list[str]:
    """Contents of up to `n` Python files: this repository's first, then the standard library's (sorted paths)."""
    paths = sorted(REPO.glob("[!.]*/**/*.py")) + sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    out = []
    for p in paths:
        if ".venv" in p.parts or ".cache" in p.parts:
            continue
        text = p.read_text(errors="replace")
        if text.strip():
            out.append(text)
        if len(out) >= n:
            break
    return out


def fit_head(encoder: ann.Encoder, files: list[str], window: int) -> tuple[np.ndarray, float]:
    """A real head: documented functions (problem + solution) vs the files' first windows."""
    pos = ann.docstring_function_positives(pd.DataFrame({"content": files}), 128, seed=0)
    neg = [ann.windows(t, encoder.tokenizer, window)[0] for t in files[:128]]
    w, b, m = ann.train_annotator(encoder.embed(pos, 32), encoder.embed(neg, 32), epochs=100, lr=1e-2, seed=0)
    print(f"head: {len(pos)} positives, {len(neg)} negatives, held-out ROC-AUC {m['heldout_auc']:.3f}")
    return w, b


def timed(fn, *args, **kwargs):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="embedded:minilm")
    ap.add_argument("--window", type=int, default=512, help="window tokens (paper: 512)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--files", type=int, default=300)
    args = ap.parse_args()

    from transformers import pipeline

    encoder = ann.Encoder(args.encoder, args.window)
    window = encoder.window_tokens
    files = code_files(args.files)
    wins = [w for t in files for w in ann.windows(t, encoder.tokenizer, window)]
    head = fit_head(encoder, files, window)
    print(f"{args.encoder} on {encoder.device} ({'bf16' if encoder.device.type == 'cuda' else 'fp32'}), "
          f"{len(files)} files -> {len(wins)} windows of <= {window} tokens, batch {args.batch}, "
          f"torch threads {torch.get_num_threads()}")

    with tempfile.TemporaryDirectory() as tmp:
        ann.export_hf_model(encoder, head, tmp)
        device = 0 if encoder.device.type == "cuda" else "cpu"
        dtype = torch.bfloat16 if encoder.device.type == "cuda" else torch.float32
        pipe = pipeline("text-classification", model=tmp, trust_remote_code=True, device=device, dtype=dtype)

        def ours(texts):
            return ann._sigmoid(encoder.embed(texts, args.batch, max_tokens=window) @ head[0] + head[1])

        def theirs(texts):
            return np.array([r["score"] for r in pipe(texts, batch_size=args.batch, truncation=True,
                                                      max_length=window)])

        ours(wins[: args.batch]), theirs(wins[: args.batch])  # warm-up (kernels, allocator)
        p_ours, s_ours = timed(ours, wins)
        p_theirs, s_theirs = timed(theirs, wins)

    w_ours, w_theirs = len(wins) / s_ours, len(wins) / s_theirs
    print(f"ours      {w_ours:10.1f} windows/s ({s_ours:.2f}s)")
    print(f"pipeline  {w_theirs:10.1f} windows/s ({s_theirs:.2f}s)")
    print(f"ratio ours/pipeline {w_ours / w_theirs:.2f}x; max |score difference| {np.abs(p_ours - p_theirs).max():.2e}")


if __name__ == "__main__":
    main()
