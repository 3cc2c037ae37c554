"""Train a Llama-style code LM on packed tokens: one phase of Arctic-SnowCoder (arXiv 2409.02326), nanoGPT-style.

    accelerate launch --config_file infra/accelerate/cpu.yaml -m model.train --spec spec.json
    accelerate launch --config_file infra/accelerate/fsdp2.yaml -m model.train --spec spec.json   # 8 GPUs
    python -m model.train --spec spec.json                                                       # no launcher

The spec is plain JSON (written by tasks/train.py; this package imports neither prefect, mlflow nor snowcoder):
    model            {n_layers, hidden, ffn, n_heads, n_kv_heads, seq_len, tie_embeddings, rope_theta}
    tokenizer_dir    HF tokenizer directory (copied into the checkpoint)
    train_tokens     directory with tokens.bin + meta.json; val_tokens the same for validation (optional)
    init_from        HF checkpoint directory to continue from (phases 2 and 3), or null (phase 1, from scratch)
    out_dir          local directory: metrics.jsonl, result.json, checkpoint/
    seed, mixed_precision ("auto" = bf16 on CUDA, fp32 elsewhere), max_val_batches, log_every (optional)
    checkpoint_every_s, checkpoint_every_steps   resume checkpoints in out_dir/resume (optional; 0 = off)
    activation_checkpointing, compile   recompute layer activations in backward / torch.compile each decoder layer
    watch_pid        exit when this process (the orchestrator) is gone, so no orphan trainer outlives a killed run
    phase            {tokens, batch_size, grad_accum, lr, min_lr, warmup_steps, schedule, weight_decay, grad_clip,
                      eval_every}
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoTokenizer, LlamaForCausalLM
from transformers.utils import logging as hf_logging

from model.config import flops_per_token, llama_config, param_count
from model.data import TokenWindows, batch_indices
from model.schedules import lr_at


def resolve_precision(choice: str) -> str:
    """'auto' -> bf16 on CUDA, fp32 elsewhere (bf16 matmuls are ~300x slower than fp32 on a plain CPU)."""
    if choice == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return choice


def build_model(spec: dict, tok) -> LlamaForCausalLM:
    if spec.get("init_from"):
        model = LlamaForCausalLM.from_pretrained(spec["init_from"], attn_implementation="sdpa", dtype=torch.float32)
        if model.config.vocab_size < len(tok):
            raise ValueError(f"checkpoint vocab {model.config.vocab_size} < tokenizer vocab {len(tok)}")
        return model
    cfg = llama_config(spec["model"], len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    return LlamaForCausalLM(cfg)


def apply_options(model: LlamaForCausalLM, *, activation_checkpointing: bool, compile: bool) -> list[str]:
    """Memory/speed options applied before accelerate wraps the model (FSDP2 shards what it is given): activation
    checkpointing of every decoder layer (non-reentrant, as torch recommends) and torch.compile of every decoder layer
    in place (torchtitan applies both per block; in-place `Module.compile` keeps parameter names, so checkpoints are
    unchanged). Returns what was applied, for the log."""
    applied = []
    if activation_checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.x; older: gradient_*
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        applied.append("activation checkpointing")
    if compile:
        for layer in model.model.layers:
            layer.compile()
        applied.append(f"torch.compile x {len(model.model.layers)} layers")
    return applied


def configure_optimizer(model, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, betas (0.9, 0.95); weight decay on matrices only (not on norms or biases), as nanoGPT."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=True)


def causal_lm_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy. Every micro-batch holds the same number of target tokens (full windows,
    no padding), so averaging micro-batch means over gradient accumulation is the exact token mean."""
    logits = model(input_ids=x).logits
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))


@torch.no_grad()
def evaluate(model, accelerator: Accelerator, data: TokenWindows, batch_size: int, max_batches: int) -> float | None:
    """Mean validation loss over the first max_batches * batch_size windows (in order, same on every run).

    Every rank runs the same number of forward passes (FSDP needs all ranks in each forward); indices past the
    end wrap around with weight 0."""
    if len(data) == 0:
        return None
    world, rank = accelerator.num_processes, accelerator.process_index
    n_used = min(len(data), max_batches * batch_size)
    n_batches = math.ceil(n_used / (batch_size * world))
    model.eval()
    total = torch.zeros(2, device=accelerator.device)  # (sum of token losses, number of tokens)
    for b in range(n_batches):
        pos = torch.arange(batch_size) + b * batch_size * world + rank * batch_size
        x, y = data.batch((pos % len(data)).tolist())
        x, y = x.to(accelerator.device), y.to(accelerator.device)
        with accelerator.autocast():
            logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none").mean(dim=1)  # (B,)
        weight = (pos < n_used).to(loss.device, loss.dtype)
        total += torch.stack([(loss * weight).sum() * data.seq_len, weight.sum() * data.seq_len])
    model.train()
    total = accelerator.reduce(total, reduction="sum")
    return (total[0] / total[1]).item()


# Dense (no sparsity) bf16 tensor-core peaks per GPU, from the vendors' datasheets (SXM parts).
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10G": 70e12}


def peak_flops(spec: dict, device) -> float | None:
    """Per-device peak for MFU: spec["peak_flops"] if given, else the datasheet bf16 peak of a known GPU, else None
    (no meaningful peak for CPUs)."""
    if spec.get("peak_flops"):
        return float(spec["peak_flops"])
    if getattr(device, "type", "") != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def resume_digest(spec: dict, train_meta: dict, world_size: int) -> str:
    """What a resume checkpoint must match to be continued: the model, the phase settings, the seed, the data and the
    world size (not paths, which differ between attempts)."""
    keep = {k: spec.get(k) for k in ("model", "phase", "seed", "mixed_precision", "init_from_digest")}
    keep.update(world_size=world_size, data={k: train_meta.get(k) for k in ("n_tokens", "n_docs", "dtype", "seed")})
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def save_resume(accelerator: Accelerator, out_dir: Path, step: int, digest: str) -> None:
    """Model, optimizer and RNG states (accelerate save_state) + the step, written to resume.tmp then renamed, so a
    kill mid-save leaves the previous resume checkpoint intact."""
    tmp, final = out_dir / "resume.tmp", out_dir / "resume"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp / "state"))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "step.json").write_text(json.dumps({"step": step, "digest": digest}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()


def load_resume(accelerator: Accelerator, out_dir: Path, digest: str) -> int:
    """The step to continue from (0 = start); restores the states when a matching resume checkpoint exists."""
    marker = out_dir / "resume" / "step.json"
    if not marker.is_file():
        return 0
    saved = json.loads(marker.read_text())
    if saved.get("digest") != digest:
        accelerator.print(f"resume checkpoint in {marker.parent} is for other settings: starting over")
        return 0
    accelerator.load_state(str(out_dir / "resume" / "state"))
    return int(saved["step"])


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the metric rows up to `step` (a resumed run re-logs what came after its checkpoint)."""
    if not path.is_file():
        path.write_text("")
        return
    rows = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(r + "\n" for r in rows))


def _orchestrator_gone(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        return False
    except ProcessLookupError:
        return True
    except PermissionError:
        return False


def train(spec: dict) -> dict:
    phase = spec["phase"]
    out_dir = Path(spec["out_dir"])
    accelerator = Accelerator(gradient_accumulation_steps=phase["grad_accum"],
                              mixed_precision=resolve_precision(spec.get("mixed_precision", "auto")))
    master = accelerator.is_main_process
    say = accelerator.print
    hf_logging.disable_progress_bar()  # keep the streamed log to one line per event
    set_seed(spec["seed"])
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    tok = AutoTokenizer.from_pretrained(spec["tokenizer_dir"])
    model = build_model(spec, tok)
    seq_len = spec["model"]["seq_len"]
    train_data = TokenWindows(spec["train_tokens"], seq_len)
    if len(train_data) == 0:
        raise ValueError(f"training data has {train_data.meta['n_tokens']} tokens: fewer than one window ({seq_len + 1})")
    val_data = TokenWindows(spec["val_tokens"], seq_len) if spec.get("val_tokens") else None

    world, batch_size, grad_accum = accelerator.num_processes, phase["batch_size"], phase["grad_accum"]
    tokens_per_step = batch_size * grad_accum * world * seq_len
    total_steps = max(1, math.ceil(phase["tokens"] / tokens_per_step))  # at least one step, even for tiny budgets
    n_params = param_count(model.config)
    fpt = flops_per_token(model.config, seq_len)
    say(f"model: {'continued from ' + spec['init_from'] if spec.get('init_from') else 'from scratch'} | "
        f"{model.config.num_hidden_layers} layers x {model.config.hidden_size} hidden | vocab {model.config.vocab_size}")
    say(f"params: {n_params:,} | FLOPs/token: {fpt:.3e} | world size: {world} | precision: {accelerator.mixed_precision}")
    say(f"tokens/step: {tokens_per_step:,} = {batch_size} seqs x {grad_accum} accum x {world} procs x {seq_len} | "
        f"steps: {total_steps} | budget: {phase['tokens']:,} tokens | data: {train_data.meta['n_tokens']:,} tokens "
        f"({total_steps * tokens_per_step / max(1, len(train_data) * seq_len):.2f} epochs)")

    applied = apply_options(model, activation_checkpointing=bool(spec.get("activation_checkpointing")),
                            compile=bool(spec.get("compile")))
    if applied:
        say("options: " + ", ".join(applied))
    optimizer = configure_optimizer(model, phase["lr"], phase["weight_decay"])
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()

    out_dir.mkdir(parents=True, exist_ok=True)
    digest = resume_digest(spec, train_data.meta, world)
    start_step = load_resume(accelerator, out_dir, digest)
    if start_step:
        say(f"resumed from {out_dir / 'resume'} at step {start_step}/{total_steps}")
    batches = batch_indices(len(train_data), batch_size, seed=spec["seed"], rank=accelerator.process_index,
                            world_size=world, skip_batches=start_step * grad_accum)
    metrics_path = out_dir / "metrics.jsonl"
    if master:
        _truncate_metrics(metrics_path, start_step)
    ckpt_every_s, ckpt_every_steps = spec.get("checkpoint_every_s", 0), spec.get("checkpoint_every_steps", 0)
    watch_pid = spec.get("watch_pid")

    def log_row(row: dict) -> None:
        if master:
            with metrics_path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")

    log_every = spec.get("log_every") or max(1, min(10, total_steps // 20))
    eval_every, max_val = phase.get("eval_every", 0), spec.get("max_val_batches", 20)
    schedule = dict(schedule=phase["schedule"], lr=phase["lr"], min_lr=phase["min_lr"], warmup_steps=phase["warmup_steps"])
    t_start = t_last = t_ckpt = time.perf_counter()
    tokens_last = start_step * tokens_per_step
    loss_sum, val_loss, last_loss = torch.zeros((), device=accelerator.device), None, float("nan")
    steps_since_log, eval_seconds, ckpt_step, grad_norm = 0, 0.0, start_step, None
    peak = peak_flops(spec, accelerator.device)
    say(f"MFU against {peak / 1e12:.0f} TFLOP/s per device (dense bf16 peak)" if peak else
        "MFU: no known peak for this device (set spec peak_flops to report it)")
    for step in range(start_step, total_steps):
        if _orchestrator_gone(watch_pid):
            say(f"orchestrator process {watch_pid} is gone: stopping at step {step} (resume checkpoint at {ckpt_step})")
            sys.exit(3)
        lr = lr_at(step, total_steps, **schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for _ in range(grad_accum):
            x, y = train_data.batch(next(batches))
            x, y = x.to(accelerator.device), y.to(accelerator.device)
            with accelerator.accumulate(model):
                loss = causal_lm_loss(model, x, y)
                accelerator.backward(loss)
                if accelerator.sync_gradients:  # norm before clipping (inf clip = measure only)
                    grad_norm = accelerator.clip_grad_norm_(
                        model.parameters(), phase["grad_clip"] if phase["grad_clip"] > 0 else float("inf"))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach() / grad_accum
        steps_since_log += 1

        done = step + 1
        if done % log_every == 0 or done == total_steps:  # same condition on every rank: reduce is a collective
            last_loss = accelerator.reduce(loss_sum / steps_since_log, reduction="mean").item()
            loss_sum.zero_()
            steps_since_log = 0
            now, tokens = time.perf_counter(), done * tokens_per_step
            tok_per_s = (tokens - tokens_last) / max(now - t_last, 1e-9)
            t_last, tokens_last = now, tokens
            gnorm = float(grad_norm) if grad_norm is not None else float("nan")
            row = dict(step=done, loss=round(last_loss, 5), lr=lr, grad_norm=round(gnorm, 5), tokens=tokens,
                       tok_per_s=round(tok_per_s, 1), elapsed_s=round(now - t_start, 2))
            if peak:
                row["mfu"] = round(fpt * tok_per_s / (peak * world), 4)
            log_row(row)
            say(f"step {done}/{total_steps} | loss {last_loss:.4f} | lr {lr:.2e} | gnorm {gnorm:.3f} | "
                f"{tok_per_s:,.0f} tok/s" + (f" | MFU {row['mfu']:.1%}" if peak else "") + f" | {now - t_start:.1f}s")
            # resume checkpoints only at logging boundaries (no partial loss sums to carry) and never at the end
            due = (ckpt_every_steps and done - ckpt_step >= ckpt_every_steps) or \
                  (ckpt_every_s and time.perf_counter() - t_ckpt >= ckpt_every_s)
            if due and done < total_steps:
                t_save = time.perf_counter()
                save_resume(accelerator, out_dir, done, digest)
                ckpt_step, t_ckpt = done, time.perf_counter()
                t_last += t_ckpt - t_save  # keep checkpointing out of the training throughput
                say(f"step {done}/{total_steps} | resume checkpoint saved in {t_ckpt - t_save:.1f}s")
        if val_data is not None and (done == total_steps or (eval_every and done % eval_every == 0)):
            t_eval = time.perf_counter()
            val_loss = evaluate(model, accelerator, val_data, batch_size, max_val)
            t_last = time.perf_counter()  # keep evaluation out of the training throughput
            eval_seconds += t_last - t_eval
            if val_loss is not None:
                log_row(dict(step=done, val_loss=round(val_loss, 5)))
                say(f"step {done}/{total_steps} | val loss {val_loss:.4f}")

    seconds = time.perf_counter() - t_start
    tokens = total_steps * tokens_per_step  # of the whole phase; throughput below counts this attempt only
    tok_per_s = (total_steps - start_step) * tokens_per_step / max(seconds - eval_seconds, 1e-9)
    save_checkpoint(accelerator, model, tok, out_dir / "checkpoint")
    # final_loss: mean training loss over the last logging interval; tok_per_s: training only (no evaluation)
    result = dict(steps=total_steps, tokens=tokens, final_loss=last_loss, val_loss=val_loss, params=n_params,
                  mfu=round(fpt * tok_per_s / (peak * world), 4) if peak else None,
                  tok_per_s=round(tok_per_s, 1), seconds=round(seconds, 2), eval_seconds=round(eval_seconds, 2),
                  flops_per_token=fpt, model_flops_per_s=round(fpt * tok_per_s, 1), tokens_per_step=tokens_per_step,
                  world_size=world, resumed_from_step=start_step)
    if master:
        (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        shutil.rmtree(out_dir / "resume", ignore_errors=True)  # the phase is done: its checkpoint supersedes it
    say(f"done: {total_steps} steps, {tokens:,} tokens in {seconds:.1f}s ({result['tok_per_s']:,.0f} tok/s), "
        f"final loss {last_loss:.4f}, val loss {val_loss}")
    accelerator.end_training()
    return result


def save_checkpoint(accelerator: Accelerator, model, tok, path: Path) -> None:
    """HF checkpoint (safetensors) + tokenizer: loads with AutoModelForCausalLM / AutoTokenizer.from_pretrained."""
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)  # a collective under FSDP: every rank calls it
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        gen = unwrapped.generation_config
        gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
        unwrapped.save_pretrained(path, state_dict=state_dict)
        tok.save_pretrained(path)
    accelerator.wait_for_everyone()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", required=True, help="path of the JSON training spec")
    args = parser.parse_args(argv)
    train(json.loads(Path(args.spec).read_text()))


if __name__ == "__main__":
    main()
