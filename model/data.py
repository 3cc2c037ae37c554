"""Token windows over a packed `tokens.bin` (written by tasks/tokenize.py:pack), nanoGPT-style.

A token directory holds `tokens.bin` (a flat array of token ids, documents joined by <|endoftext|>) and
`meta.json` ({dtype, n_tokens, ...}). Window i covers tokens[i*T : i*T + T + 1]: the model reads the first T
tokens and predicts the last T, so consecutive windows share one boundary token and every token is a target
exactly once per epoch. Windows are visited in a seeded random order, a fresh permutation per epoch.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import torch


def read_meta(token_dir: str | Path) -> dict:
    return json.loads((Path(token_dir) / "meta.json").read_text())


class TokenWindows:
    """Memory-mapped fixed-length windows of seq_len + 1 tokens."""

    def __init__(self, token_dir: str | Path, seq_len: int):
        self.meta = read_meta(token_dir)
        self.seq_len = seq_len
        self.tokens = np.memmap(Path(token_dir) / "tokens.bin", dtype=np.dtype(self.meta["dtype"]), mode="r")
        if len(self.tokens) != self.meta["n_tokens"]:
            raise ValueError(f"{token_dir}: tokens.bin holds {len(self.tokens)} tokens, meta.json says {self.meta['n_tokens']}")
        self.n_windows = max(0, (len(self.tokens) - 1) // seq_len)

    def __len__(self) -> int:
        return self.n_windows

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < self.n_windows:
            raise IndexError(i)
        start = i * self.seq_len
        return np.asarray(self.tokens[start : start + self.seq_len + 1], dtype=np.int64)

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), both (B, T) int64."""
        rows = torch.from_numpy(np.stack([self[int(i)] for i in indices]))
        return rows[:, :-1], rows[:, 1:]


def epoch_permutation(n_windows: int, seed: int, epoch: int) -> np.ndarray:
    """The window order of one epoch: deterministic given (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n_windows)


def batch_indices(n_windows: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                  skip_batches: int = 0) -> Iterator[np.ndarray]:
    """Endless stream of this rank's window indices, batch by batch.

    The global stream is the concatenation of the epoch permutations; each global batch of batch_size * world_size
    indices is split between ranks. `skip_batches` skips the first k global batches without replaying them
    (resume). A batch may straddle two epochs, so no window is ever dropped.
    """
    if n_windows <= 0:
        raise ValueError("no windows to sample from")
    global_bs = batch_size * world_size
    pos = skip_batches * global_bs
    cache: dict[int, np.ndarray] = {}

    def take(start: int, count: int) -> np.ndarray:
        out = []
        while count > 0:
            epoch, offset = divmod(start, n_windows)
            if epoch not in cache:
                cache.clear()
                cache[epoch] = epoch_permutation(n_windows, seed, epoch)
            chunk = cache[epoch][offset : offset + count]
            out.append(chunk)
            start += len(chunk)
            count -= len(chunk)
        return np.concatenate(out)

    while True:
        yield take(pos + rank * batch_size, batch_size)
        pos += global_bs
