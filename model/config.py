"""Llama-2-style decoder configs, parameter counts and FLOPs per token.

The model dict is the JSON form of snowcoder.config.ModelConfig (this package never imports snowcoder):
    {n_layers, hidden, ffn, n_heads, n_kv_heads (None = n_heads), seq_len, tie_embeddings, rope_theta}

Arctic-SnowCoder-1.3B (arXiv 2409.02326, Table 1): 24 layers, hidden 2048, ffn 5632, 16 heads (no GQA),
vocab 64000, seq 8192, RoPE, tied input/output embeddings -> about 1.36B parameters.
"""
from __future__ import annotations

from transformers import LlamaConfig

MODEL_KEYS = ("n_layers", "hidden", "ffn", "n_heads", "n_kv_heads", "seq_len", "tie_embeddings", "rope_theta")


def _model(n_layers, hidden, ffn, n_heads, seq_len, n_kv_heads=None, tie_embeddings=True, rope_theta=10000.0) -> dict:
    return dict(n_layers=n_layers, hidden=hidden, ffn=ffn, n_heads=n_heads, n_kv_heads=n_kv_heads, seq_len=seq_len,
                tie_embeddings=tie_embeddings, rope_theta=rope_theta)


# Named model shapes: {"model": model dict, "vocab_size": int}. ffn ~ 8/3 * hidden (Llama SwiGLU sizing).
PRESETS: dict[str, dict] = {
    "micro": {"model": _model(2, 64, 172, 2, 128), "vocab_size": 1024},
    "tiny": {"model": _model(4, 256, 688, 4, 256), "vocab_size": 8192},
    "125m": {"model": _model(12, 768, 2048, 12, 2048), "vocab_size": 32000},
    "350m": {"model": _model(24, 1024, 2816, 16, 2048), "vocab_size": 32000},
    "paper-1.3b": {"model": _model(24, 2048, 5632, 16, 8192, n_kv_heads=16), "vocab_size": 64000},
}


def llama_config(model: dict, vocab_size: int, bos_id: int | None, eos_id: int | None,
                 pad_id: int | None) -> LlamaConfig:
    """transformers.LlamaConfig for a model dict (SDPA attention, no biases, SwiGLU, RMSNorm, RoPE)."""
    unknown = set(model) - set(MODEL_KEYS)
    if unknown:
        raise ValueError(f"unknown model keys: {sorted(unknown)}")
    n_heads = model["n_heads"]
    n_kv = model.get("n_kv_heads") or n_heads
    if model["hidden"] % n_heads or n_heads % n_kv:
        raise ValueError(f"hidden {model['hidden']} / n_heads {n_heads} / n_kv_heads {n_kv} do not divide")
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=model["hidden"],
        intermediate_size=model["ffn"],
        num_hidden_layers=model["n_layers"],
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        max_position_embeddings=model["seq_len"],
        rope_parameters={"rope_type": "default", "rope_theta": float(model.get("rope_theta", 10000.0))},
        tie_word_embeddings=bool(model.get("tie_embeddings", True)),
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
    )
    cfg._attn_implementation = "sdpa"
    return cfg


def param_count(cfg: LlamaConfig) -> int:
    """Exact parameter count of LlamaForCausalLM(cfg) (tied embeddings counted once)."""
    h, f, v, n_layers = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_hidden_layers
    head_dim = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
    q_dim = cfg.num_attention_heads * head_dim
    kv_dim = cfg.num_key_value_heads * head_dim
    attn = h * q_dim + 2 * h * kv_dim + q_dim * h
    mlp = 3 * h * f  # gate, up, down (SwiGLU)
    per_layer = attn + mlp + 2 * h  # + input / post-attention RMSNorm weights
    embed = v * h
    head = 0 if cfg.tie_word_embeddings else v * h
    return embed + n_layers * per_layer + h + head


def flops_per_token(cfg: LlamaConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 N + 12 L H T (PaLM appendix B; nanoGPT estimate_mfu).

    N counts the weights that take part in a matmul: everything except the input-embedding lookup (the output
    projection is a matmul even when it shares its weight with the embedding). 12 L H T is the attention
    score/value term (forward + backward) at context length T.
    """
    n_matmul = param_count(cfg) - (0 if cfg.tie_word_embeddings else cfg.vocab_size * cfg.hidden_size)
    return 6.0 * n_matmul + 12.0 * cfg.num_hidden_layers * cfg.hidden_size * seq_len
