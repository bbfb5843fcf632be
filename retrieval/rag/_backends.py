"""Generator backends, keyed by ``GeneratorConfig.kind``."""

from __future__ import annotations

from collections.abc import Callable

from genret.core import ConfigError

from ._generator import Generator, GeneratorConfig
from ._local import HFGenerator
from ._openai import OpenAIGenerator


def _llamacpp(config: GeneratorConfig) -> Generator:
    from ._llamacpp import LlamaCppGenerator  # imports llama_cpp: only when asked for

    return LlamaCppGenerator(config)


GENERATORS: dict[str, Callable[[GeneratorConfig], Generator]] = {"hf": HFGenerator, "openai": OpenAIGenerator,
                                                                 "llamacpp": _llamacpp}


def load_generator(config: GeneratorConfig | None = None) -> Generator:
    """The generator backend named by ``config.kind``."""
    config = config or GeneratorConfig()
    if config.kind not in GENERATORS:
        raise ConfigError(f"unknown generator kind {config.kind!r}; known: {sorted(GENERATORS)}")
    return GENERATORS[config.kind](config)
