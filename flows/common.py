"""What phases hand each other: small, serialisable results (URIs, counts), never data."""
from __future__ import annotations

from pydantic import BaseModel, Field

from snowcoder.manifest import Manifest
from snowcoder.tracking import Tracking


class PhaseResult(BaseModel):
    phase: str = Field(description="alpha | beta | final")
    manifests: dict[str, Manifest] = Field(default_factory=dict, description="Stage name -> manifest.")
    mlflow_run_id: str | None = None
    seconds: float = 0.0

    @property
    def checkpoint(self) -> str:
        return self.manifests["train"].uris["checkpoint"]

    def row(self) -> dict:
        """One line of the summary table."""
        train = self.manifests["train"].counts
        ev = self.manifests["eval"].counts
        tokens = self.manifests["tokens"].counts
        return {
            "phase": self.phase,
            "docs": int(tokens.get("unique_docs", tokens.get("n_docs", 0))),
            "tokens_available": int(tokens.get("n_tokens", 0)),
            "tokens_trained": int(train.get("tokens", 0)),
            "train_loss": train.get("final_loss"),
            "heldout_loss": ev.get("heldout_loss"),
            "humaneval_pass@1": ev.get("humaneval_pass@1"),
            "checkpoint": self.checkpoint,
            "mlflow_run_id": self.mlflow_run_id,
            "seconds": round(self.seconds, 1),
        }


def train_and_evaluate(
    config, phase: str, tokenizer_dir: str, tokens_uri: str, heldout_uri: str, init_from: str | None,
    out_dir: str, seed: int, run: Tracking,
) -> tuple[Manifest, Manifest]:
    """The tail every phase shares: train (accelerate subprocess) on packed tokens, then evaluate the checkpoint."""
    from snowcoder import storage
    from tasks import steps

    phase_cfg = getattr(config.train, phase)
    trained = steps.train_task(
        phase, config.model, phase_cfg, config.train, tokenizer_dir, tokens_uri, heldout_uri, init_from,
        storage.join(out_dir, "train"), seed, run,
    )
    evaluated = steps.eval_task(
        phase, config.eval, trained.uris["checkpoint"], heldout_uri, config.model.seq_len,
        storage.join(out_dir, "eval"), run,
    )
    return trained, evaluated


__all__ = ["PhaseResult", "Tracking", "train_and_evaluate"]
