"""Phase 2, fine-tuned mode: the quality annotator with its encoder trained too, not frozen.

tasks/annotate.py fits the paper's annotator (Arctic-SnowCoder §2.3, "a linear classification head on top of"
snowflake-arctic-embed-m) as a logistic head over a FROZEN encoder, as FineWeb-Edu's classifier does. The paper does
not say whether its encoder was frozen (recipe.md §3); this module gives the other reading: all encoder weights and
the linear head are trained together, on the same data, split and loss, and the result has the same shape:

    p(high quality) = sigmoid(encoder.embed(text) @ weights + bias)

so the scoring, validation and HF export code of tasks/annotate.py works unchanged on the fine-tuned encoder (the
encoder is changed in place; `encoder_state_digest` keys score files by its weights).

Recipe (BERT fine-tuning defaults: Devlin et al. 2019; Mosbach et al. 2021 for warmup + clipping):
  - split      the stratified 80/20 split of train_annotator (`_stratified_split`, same seed, same label order:
               positives then negatives), so the frozen and fine-tuned heads are measured on the same held-out texts;
  - head       a linear head on the unit-norm embedding, initialised at ZERO (p = 0.5 everywhere, no random noise
               sent into the encoder) and trained at `head_lr` >> lr with no warmup. Unit-norm features are small
               (|x_i| ~ 1/sqrt(dim)), so the head needs large weights (|w| ~ several units along the class direction);
               with Adam each coordinate moves ~head_lr per step, so head_lr ~ 1e-2 reaches useful logits in a few
               steps, while the encoder (lr ~ 2e-5, warming up over the first ~10% of steps) barely moves until the
               head points somewhere useful: a cheap form of LP-FT (Kumar et al. 2022, "Fine-tuning can distort
               pretrained features"). Initialising from train_annotator's frozen probe was tried and rejected: on
               separable data it saturates (train loss ~1e-12), so the encoder gets no gradient at all;
  - loss       class-balanced BCE (weights n / (2 n_class) over the training split, as train_annotator);
  - optimiser  AdamW (fused; no decay on biases and LayerNorm); encoder lr: linear warmup over ~10% of the steps then
               linear decay to ~0 (the head: the same decay, no warmup); gradient clipping at 1.0; dropout on
               (model.train()) while training, model.eval() at the end;
  - precision  fp32 on CPU; on CUDA the (bf16-loaded) encoder is trained in fp32 under bf16 autocast (bf16 master
               weights would round away updates of lr ~ 2e-5) and cast back to its load dtype at the end, so scoring
               runs as fast as before; the head and its logits stay fp32 as in Encoder.embed + numpy;
  - metrics    the keys of train_annotator, computed with the FINAL model through encoder.embed on the split's texts,
               plus finetune_epochs / finetune_steps / finetune_s and the mean training loss per epoch. The frozen
               baseline on the same held-out texts is train_annotator on embeddings taken before fine-tuning (same
               seed -> same split).
"""
from __future__ import annotations

import hashlib
import logging
import math
import time

import numpy as np
import torch

from snowcoder.config import UserError
from tasks.annotate import Encoder, _sigmoid, _stratified_split, split_metrics

log = logging.getLogger("snowcoder.annotate.finetune")

WARMUP_FRACTION = 0.1


def encoder_state_digest(encoder: Encoder) -> str:
    """sha256 over the encoder's state_dict in sorted key order (name, dtype, shape and raw bytes of each tensor), so
    score files can be keyed by the exact (fine-tuned) weights that produced them."""
    h = hashlib.sha256()
    state = encoder.model.state_dict()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous().reshape(-1)
        h.update(f"{key}|{t.dtype}|{tuple(state[key].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier at optimiser step `step` (0-based): linear warmup over `warmup` steps reaching 1 at
    step warmup-1 (the first step already moves: 1/warmup), then linear decay to 1/(total-warmup) at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def pooled_embeddings(encoder: Encoder, texts: list[str], max_tokens: int) -> torch.Tensor:
    """(len(texts), dim) fp32 L2-normalised embeddings WITH autograd: the same tokenisation, pooling ('mean' over
    real tokens or 'cls') and normalisation as Encoder.embed (which runs under inference_mode and cannot train)."""
    batch = encoder.tokenizer(texts, padding=True, truncation=True, max_length=max_tokens,
                              return_tensors="pt").to(encoder.device)
    hidden = encoder.model(**batch).last_hidden_state  # (B, T, H)
    if encoder.pooling == "cls":
        pooled = hidden[:, 0]
    else:
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled.float(), dim=-1)


def _check_inputs(pos_texts: list[str], neg_texts: list[str], epochs: int, lr: float, head_lr: float,
                  batch_size: int) -> None:
    """UserError on input fine-tuning cannot use: the stratified split needs >= 2 examples per class (one held out)."""
    if len(pos_texts) < 2 or len(neg_texts) < 2:
        raise UserError(f"annotator fine-tuning needs at least 2 positive and 2 negative texts (one of each is held "
                        f"out), got {len(pos_texts)} positives and {len(neg_texts)} negatives")
    if epochs < 1 or batch_size < 1:
        raise UserError(f"annotator fine-tuning needs epochs >= 1 and batch_size >= 1, got epochs={epochs}, "
                        f"batch_size={batch_size}")
    if not (lr > 0 and head_lr > 0):
        raise UserError(f"annotator fine-tuning needs lr > 0 and head_lr > 0, got lr={lr}, head_lr={head_lr}")


def _param_groups(model: torch.nn.Module, head: torch.nn.Linear, lr: float, head_lr: float,
                  weight_decay: float) -> list[dict]:
    """AdamW groups: encoder matrices decayed, encoder biases / LayerNorm not (BERT recipe); the head at head_lr."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "lr": lr, "weight_decay": weight_decay},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0},
            {"params": [head.weight], "lr": head_lr, "weight_decay": weight_decay},
            {"params": [head.bias], "lr": head_lr, "weight_decay": 0.0}]


def _split_metrics(encoder: Encoder, head: tuple[np.ndarray, float], texts: list[str], y: np.ndarray,
                   train_idx: np.ndarray, test_idx: np.ndarray, batch_size: int, max_tokens: int) -> dict:
    """train_annotator's metric keys, with the final model: probabilities = sigmoid(encoder.embed @ w + b)."""
    weights, bias = head
    probs = _sigmoid(encoder.embed(texts, batch_size, max_tokens=max_tokens) @ weights + bias)

    # the training loss of the final model (eval mode, class-balanced BCE over the whole training split)
    yt, pt = y[train_idx], np.clip(probs[train_idx].astype(np.float64), 1e-12, 1 - 1e-12)
    n_pos = max(float(yt.sum()), 1.0)
    n_neg = max(float(len(yt) - yt.sum()), 1.0)
    w = np.where(yt > 0, len(yt) / (2 * n_pos), len(yt) / (2 * n_neg))
    train_loss = float(np.mean(-w * (yt * np.log(pt) + (1 - yt) * np.log(1 - pt))))
    return {**split_metrics(y, probs, train_idx, test_idx), "train_loss": train_loss}


def finetune_annotator(encoder: Encoder, pos_texts: list[str], neg_texts: list[str], *, epochs: int, lr: float,
                       head_lr: float, batch_size: int, seed: int, max_tokens: int | None = None,
                       weight_decay: float = 0.01) -> tuple[np.ndarray, float, dict]:
    """Fine-tune `encoder.model` IN PLACE together with a linear head on its pooled, L2-normalised embedding.

    Returns (weights float32 (dim,), bias, metrics) such that sigmoid(encoder.embed(texts) @ weights + bias) is the
    fine-tuned annotator's probability (the model is left in eval mode, in its load dtype). Texts are truncated to
    `max_tokens` (default and cap: encoder.window_tokens). The head starts at zero and learns at `head_lr` (see the
    module docstring). Deterministic for a seed (split, batch order, dropout): bit-identical on CPU; on CUDA up to its
    non-deterministic kernels (the embedding backward accumulates with atomics). Metrics:
    train_annotator's keys plus finetune_epochs, finetune_steps, finetune_s and finetune_epoch_loss (per epoch)."""
    _check_inputs(pos_texts, neg_texts, epochs, lr, head_lr, batch_size)
    max_tokens = min(max_tokens or encoder.window_tokens, encoder.window_tokens)
    texts = [t or "" for t in list(pos_texts) + list(neg_texts)]
    y = np.concatenate([np.ones(len(pos_texts)), np.zeros(len(neg_texts))]).astype(np.float32)
    train_idx, test_idx = _stratified_split(y, np.random.default_rng(seed))

    model, device = encoder.model, encoder.device
    load_dtype = next(model.parameters()).dtype
    model.float()  # fp32 master weights (a no-op on CPU); bf16 only inside autocast
    torch.manual_seed(seed)
    head = torch.nn.Linear(encoder.dim, 1).to(device)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)

    yt = y[train_idx]
    n_pos, n_neg = float(yt.sum()), float(len(yt) - yt.sum())
    class_w = {1.0: len(yt) / (2 * n_pos), 0.0: len(yt) / (2 * n_neg)}
    steps_per_epoch = math.ceil(len(train_idx) / batch_size)
    total = epochs * steps_per_epoch
    warmup = max(1, round(WARMUP_FRACTION * total))
    # fused: one kernel over all tensors; on 2 CPU cores the default foreach step over MiniLM's 22M parameters
    # took 0.5-3 s, longer than the forward and backward of a batch (fused: 0.05-0.5 s)
    opt = torch.optim.AdamW(_param_groups(model, head, lr, head_lr, weight_decay), betas=(0.9, 0.999), eps=1e-8,
                            fused=True)
    encoder_lr = lambda s: lr_factor(s, warmup, total)  # noqa: E731
    head_lr_f = lambda s: lr_factor(max(s, warmup), warmup, total)  # noqa: E731 - no warmup for the head
    sched = torch.optim.lr_scheduler.LambdaLR(opt, [encoder_lr, encoder_lr, head_lr_f, head_lr_f])
    params = [p for g in opt.param_groups for p in g["params"]]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    order_rng = np.random.default_rng([seed, 1])  # batch order: its own stream, the split keeps `seed`'s

    t0 = time.perf_counter()
    model.train()
    epoch_losses: list[float] = []
    try:
        for epoch in range(epochs):
            order = train_idx[order_rng.permutation(len(train_idx))]
            losses = []
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                target = torch.from_numpy(y[idx]).to(device)
                weight = torch.tensor([class_w[float(v)] for v in y[idx]], device=device)
                with autocast:
                    emb = pooled_embeddings(encoder, [texts[i] for i in idx], max_tokens)  # (B, dim) fp32
                with torch.autocast(device.type, enabled=False):  # the head in fp32, as embed @ w + b in numpy
                    logits = head(emb).squeeze(-1)
                    loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
                            * weight).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                losses.append(float(loss.item()))
            epoch_losses.append(round(float(np.mean(losses)), 6))
            log.info("fine-tune epoch %d/%d: train loss %.4f (%.1fs elapsed)", epoch + 1, epochs, epoch_losses[-1],
                     time.perf_counter() - t0)
    finally:
        model.eval()
        model.to(load_dtype)
    finetune_s = time.perf_counter() - t0

    weights = head.weight.detach().float().cpu().numpy().reshape(-1).astype(np.float32)
    bias = float(head.bias.detach().float().cpu().item())
    metrics = _split_metrics(encoder, (weights, bias), texts, y, train_idx, test_idx, batch_size, max_tokens)
    metrics.update({"finetune_epochs": int(epochs), "finetune_steps": int(total),
                    "finetune_s": round(finetune_s, 3), "finetune_epoch_loss": epoch_losses})
    log.info("fine-tuned annotator: held-out AUC %.3f, F1 %.3f, ECE %.3f; %d steps in %.1fs",
             metrics["heldout_auc"], metrics["heldout_f1"], metrics["heldout_ece"], total, finetune_s)
    return weights, bias, metrics
