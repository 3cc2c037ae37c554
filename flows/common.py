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


__all__ = ["PhaseResult", "Tracking"]
