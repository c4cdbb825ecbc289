"""The ``execflow`` command line.

Command groups live in modules of this package, each exposing ``register(main)``; they are
discovered, so a domain adds its commands in one new file. Every command honours
``EXECFLOW_DATA_DIR`` and ``EXECFLOW_DATABASE_URL`` through the one settings class.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Any

import click
from pydantic import ValidationError

from models.settings import Settings, configure


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment plus CLI flags; exit with the offending field on error."""
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            click.echo(f"error: invalid setting EXECFLOW_{field.upper()}: {err['msg']}", err=True)
        sys.exit(2)
    configure(settings)
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """ExecFlow: AI agent orchestration for operations and security teams."""


for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name.startswith("_"):
        continue
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    if hasattr(_module, "register"):
        _module.register(main)
