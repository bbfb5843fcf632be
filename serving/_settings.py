"""Server settings: from flags, environment (``GENRET_…``, nested with ``__``) or defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from retrieval import RetrievalConfig


class ServerConfig(BaseModel):
    """HTTP-level settings."""

    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    default_k: int = Field(10, ge=1)
    max_k: int = Field(100, ge=1)
    max_query_chars: int = Field(2000, ge=1)


class Settings(BaseSettings):
    """Everything ``genret serve`` needs; each component reads only its own section."""

    model_config = SettingsConfigDict(env_prefix="GENRET_", env_nested_delimiter="__", extra="forbid")
    indexes: list[Path] = Field(default_factory=list, description="index directories to serve")
    server: ServerConfig = Field(default_factory=ServerConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
