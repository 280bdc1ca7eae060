"""netwatch agent: runs probes on a site node and ships their Samples to the centre."""

import sys
import types

__version__ = "0.1.0"


def _no_pydantic_plugins() -> None:
    """pydantic looks for plugins (the ``pydantic`` entry-point group) when it builds its first
    model: that imports importlib.metadata (zipfile, email, csv, bz2, lzma...) and reads every
    installed package's metadata — about 2 MB of the agent's RSS for plugins it never uses. This is
    PYDANTIC_DISABLE_PLUGINS=__all__ without that import: pydantic imports ``get_plugins`` from this
    module only inside ``create_schema_validator``. A process that loaded the real one keeps it."""
    name = "pydantic.plugin._loader"
    if name not in sys.modules:
        stub = types.ModuleType(name, "netwatch agent: no pydantic plugins (see agent/__init__.py)")
        stub.get_plugins = lambda: ()  # type: ignore[attr-defined]
        sys.modules[name] = stub


_no_pydantic_plugins()
