"""Small manifests that stages and phases hand each other: URIs, counts and a content digest — never data."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from snowcoder import storage


class Manifest(BaseModel):
    stage: str = Field(description="Stage that produced it, e.g. 'crawl', 'filter', 'train-alpha'.")
    uris: dict[str, Any] = Field(default_factory=dict, description="Named outputs: a URI or a list of URIs.")
    counts: dict[str, float] = Field(default_factory=dict, description="Docs, bytes, tokens, ... (numbers only).")
    stats: dict[str, Any] = Field(default_factory=dict, description="Small structured stats (tables, per-reason counts).")
    digest: str = Field("", description="Content digest of the outputs.")
    cache_key: str = Field("", description="Key of the inputs, config and code that produced it (reuse on re-runs).")
    reused: bool = Field(False, exclude=True, description="Runtime only: loaded from a finished earlier run.")

    def save(self, uri: str) -> str:
        storage.write_json(uri, self.model_dump(mode="json"))
        return uri

    @classmethod
    def load(cls, uri: str) -> "Manifest":
        return cls.model_validate(storage.read_json(uri))

    def shard_uris(self, key: str = "docs") -> list[str]:
        value = self.uris.get(key, [])
        return [value] if isinstance(value, str) else list(value)
