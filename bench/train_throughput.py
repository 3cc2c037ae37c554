"""Training throughput: our trainer (model/train.py under accelerate) vs a plain transformers `Trainer` on the same
model, data and batch shape, run one after the other in this same run (each in a fresh subprocess, so neither
inherits the other's threads or allocator state). Prints tokens/s, MFU when the device has a known peak, and the
ratio ours/theirs.

    .venv/bin/python bench/train_throughput.py [--preset tiny] [--seq-len 256] [--batch 8] [--steps 30]
    .venv/bin/python bench/train_throughput.py --preset paper-1.3b --seq-len 8192 --batch 1 --steps 20 --only ours  # GPU
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_tokens(directory: Path, n_tokens: int, vocab: int, seed: int = 0) -> None:
    """Random token ids in the packed format model/data.py reads (throughput does not depend on the text)."""
    directory.mkdir(parents=True, exist_ok=True)
    dtype = np.uint16 if vocab < 65536 else np.uint32
    np.random.default_rng(seed).integers(0, vocab, n_tokens, dtype=np.int64).astype(dtype).tofile(directory / "tokens.bin")
    (directory / "meta.json").write_text(json.dumps({"dtype": np.dtype(dtype).name, "n_tokens": n_tokens}))


def tokenizer_dir(directory: Path, vocab: int) -> str:
    """A byte-level BPE with `vocab` entries trained on a little text (only its size and special ids matter)."""
    from snowcoder.config import TokenizerConfig
    from snowcoder import storage
    import pandas as pd
    from tasks.tokenize import train_tokenizer

    text = [(Path(np.__file__).parent / "core" / "numeric.py").read_text()] * 4
    df = pd.DataFrame(dict(doc_id=["d0", "d1", "d2", "d3"], repo="r", path="p.py", language="python", content=text,
                           size_bytes=[len(t) for t in text], content_sha256="", source="bench"))
    shards = storage.write_shards(df, str(directory / "docs"), "docs", 10)
    train_tokenizer(TokenizerConfig(vocab_size=vocab), shards, str(directory / "tok"))
    return str(directory / "tok")


def run_ours(args, work: Path) -> dict:
    from model.config import PRESETS

    model = dict(PRESETS[args.preset]["model"], seq_len=args.seq_len)
    spec = {
        "model": model, "tokenizer_dir": args.tok, "train_tokens": str(work / "tokens"), "val_tokens": None,
        "init_from": None, "out_dir": str(work / "ours"), "seed": 0, "mixed_precision": "auto",
        "log_every": max(1, args.steps // 5), "checkpoint_every_s": 0,
        "phase": {"tokens": args.steps * args.batch * args.seq_len, "batch_size": args.batch, "grad_accum": 1,
                  "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 2, "schedule": "cosine", "weight_decay": 0.1,
                  "grad_clip": 1.0, "eval_every": 0},
    }
    (work / "spec.json").write_text(json.dumps(spec))
    from snowcoder.reports import read_metrics
    from tasks.train import accelerate_config_path, launch_command

    cmd = launch_command(accelerate_config_path("single-gpu" if args.cuda else "cpu"), work / "spec.json")
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if out.returncode:
        raise SystemExit(out.stdout[-3000:] + out.stderr[-3000:])
    rows = read_metrics(str(work / "ours"))
    steady = [r["tok_per_s"] for r in rows[1:] if "tok_per_s" in r] or [rows[-1]["tok_per_s"]]  # skip warm-up
    result = json.loads((work / "ours" / "result.json").read_text())
    return {"tok_per_s": float(np.median(steady)), "mfu": result.get("mfu"), "params": result["params"],
            "flops_per_token": result["flops_per_token"]}


def run_hf(args, work: Path) -> dict:
    """transformers.Trainer on the same windows: same model class, batch, sequence length, optimizer family."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from model.config import PRESETS, llama_config
    from model.data import TokenWindows

    tok = AutoTokenizer.from_pretrained(args.tok)
    cfg = llama_config(dict(PRESETS[args.preset]["model"], seq_len=args.seq_len), len(tok), tok.bos_token_id,
                       tok.eos_token_id, tok.pad_token_id)
    model = LlamaForCausalLM(cfg)
    windows = TokenWindows(work / "tokens", args.seq_len)

    class Windows(torch.utils.data.Dataset):
        def __len__(self):
            return len(windows)

        def __getitem__(self, i):
            row = torch.from_numpy(windows[i])
            return {"input_ids": row[:-1], "labels": row[1:]}

    class Clock(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_end(self, *_, **__):
            self.times.append(time.perf_counter())

    clock = Clock()
    targs = TrainingArguments(output_dir=str(work / "hf"), per_device_train_batch_size=args.batch, max_steps=args.steps,
                              learning_rate=1e-3, weight_decay=0.1, max_grad_norm=1.0, warmup_steps=2,
                              lr_scheduler_type="cosine", logging_strategy="no", save_strategy="no", report_to=[],
                              bf16=args.cuda, use_cpu=not args.cuda, dataloader_num_workers=0, seed=0,
                              disable_tqdm=True)

    def collate(items):  # labels already shifted: compute the loss the same way as ours (no second shift)
        return {"input_ids": torch.stack([x["input_ids"] for x in items]), "labels": torch.stack([x["labels"] for x in items])}

    class ShiftedTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            logits = model(input_ids=inputs["input_ids"]).logits
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), inputs["labels"].flatten())
            return (loss, logits) if return_outputs else loss

    ShiftedTrainer(model=model, args=targs, train_dataset=Windows(), data_collator=collate, callbacks=[clock]).train()
    gaps = np.diff(clock.times)[1:]  # skip the first (warm-up) step
    return {"tok_per_s": float(args.batch * args.seq_len / np.median(gaps))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", help="model shape from model/config.py PRESETS")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--only", choices=("ours", "hf"), default=None)
    ap.add_argument("--worker", choices=("ours", "hf"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tok", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    args.cuda = torch.cuda.is_available()
    if args.worker:
        fn = run_ours if args.worker == "ours" else run_hf
        print("RESULT " + json.dumps(fn(args, Path(args.work))))
        return

    from model.config import PRESETS

    vocab = PRESETS[args.preset]["vocab_size"]
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        tok = tokenizer_dir(work, min(vocab, 4096) if not args.cuda else vocab)
        write_tokens(work / "tokens", (args.steps + 4) * args.batch * args.seq_len + 1,
                     len(__import__("transformers").AutoTokenizer.from_pretrained(tok)))
        results = {}
        for who in ("ours", "hf"):
            if args.only and who != args.only:
                continue
            out = subprocess.run([sys.executable, __file__, "--worker", who, "--work", tmp, "--tok", tok,
                                  "--preset", args.preset, "--seq-len", str(args.seq_len), "--batch", str(args.batch),
                                  "--steps", str(args.steps)], capture_output=True, text=True, cwd=REPO)
            line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"{who} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
            results[who] = json.loads(line[7:])
    device = torch.cuda.get_device_name() if args.cuda else f"CPU ({os.cpu_count()} cores)"
    print(f"{args.preset}, seq {args.seq_len}, batch {args.batch}, {args.steps} steps on {device}")
    for who, r in results.items():
        mfu = f"  MFU {r['mfu']:.1%}" if r.get("mfu") else ""
        print(f"  {who:<5} {r['tok_per_s']:>10,.0f} tok/s{mfu}")
    if len(results) == 2:
        print(f"  ratio ours/transformers.Trainer: {results['ours']['tok_per_s'] / results['hf']['tok_per_s']:.2f}x")


if __name__ == "__main__":
    main()
