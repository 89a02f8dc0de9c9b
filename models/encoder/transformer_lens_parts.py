"""The TransformerLens classes the encoder is built from, imported without TransformerLens' heavy
package ``__init__``.

``import transformer_lens`` (4.x) runs ``transformer_lens/__init__.py`` and
``transformer_lens/utilities/__init__.py``, which import Hugging Face ``transformers`` and ``datasets``
(tokenizers, dataset loaders) — about 2 s of a 5 s analysis command, for nothing this model uses. The
classes we build on (``HookPoint``, ``HookedRootModule``, ``ActivationCache``, ``FactoredMatrix``)
live in modules that need none of it. So, when TransformerLens is not imported yet, this module puts
*deferred* package objects for ``transformer_lens``, ``transformer_lens.utilities`` and
``transformer_lens.conversion_utils`` into ``sys.modules`` — the real package objects (same spec,
``__path__`` and file), whose ``__init__`` has not run yet — and imports those four modules from
them. A deferred package completes itself the first time anything asks it for a name it does not have
(``transformer_lens.patching``, ``from transformer_lens import TransformerBridge``,
``transformer_lens.utilities.get_dataset``): its ``__init__`` then runs in place, once, and from then
on it is the ordinary package. Submodule imports (``import transformer_lens.patching``) need no
``__init__`` and work either way. The classes are the same objects either way: TransformerLens'
own code, its patching functions and an ``isinstance`` against ``transformer_lens.ActivationCache``
see no difference (``tests/test_transformer_lens.py``).

If TransformerLens was imported before, or its layout differs from 4.x's (a module below is missing),
this falls back to the plain ``import transformer_lens``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

# The packages whose __init__ is deferred, parents first.
DEFERRED = ("transformer_lens", "transformer_lens.utilities", "transformer_lens.conversion_utils")
# Names of transformer_lens.utilities that the modules below read from the package, with the light
# submodule defining each (utilities/__init__ re-exports them); the rest completes the package.
UTILITIES = {
    "Slice": "slice",
    "SliceInput": "slice",
    "remove_batch_dim": "tensors",
    "warn_if_mps": "devices",
    "get_act_name": "components_utils",
}

# Modules named after the class they define; transformer_lens/__init__ binds the package attribute to the
# class (``from .ActivationCache import ActivationCache``), a plain submodule import to the module.
CLASSES = ("HookedRootModule", "ActivationCache", "FactoredMatrix")


def _deferred_package(name: str) -> types.ModuleType:
    """``sys.modules[name]``: the package ``name`` with its ``__init__`` not yet run; the first missing
    attribute runs it (in place, once)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not a package")
    module = importlib.util.module_from_spec(spec)

    def __getattr__(attr: str) -> Any:
        if module.__dict__.pop("__getattr__", None) is None:  # __init__ is running or has run
            raise AttributeError(f"module {name!r} has no attribute {attr!r}")
        spec.loader.exec_module(module)  # may define its own module __getattr__ (TransformerLens does)
        return getattr(module, attr)

    module.__getattr__ = __getattr__
    parent, _, child = name.rpartition(".")
    sys.modules[name] = module
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


def _import_parts() -> None:
    if "transformer_lens" in sys.modules:  # already imported (completely or through this module)
        return
    try:
        for name in DEFERRED:
            _deferred_package(name)
        utilities = sys.modules["transformer_lens.utilities"]
        for attr, submodule in UTILITIES.items():
            value = getattr(importlib.import_module(f"transformer_lens.utilities.{submodule}"), attr)
            utilities.__dict__[attr] = value
        importlib.import_module("transformer_lens.hook_points")
        package = sys.modules["transformer_lens"]
        for name in CLASSES:  # the package binds each name to the class, not to its module
            package.__dict__[name] = getattr(importlib.import_module(f"transformer_lens.{name}"), name)
    except (ImportError, AttributeError):  # another layout: forget the partial import, import it whole
        for name in [n for n in sys.modules if n == "transformer_lens" or n.startswith("transformer_lens.")]:
            del sys.modules[name]
        importlib.import_module("transformer_lens")


_import_parts()

from transformer_lens.ActivationCache import ActivationCache  # noqa: E402
from transformer_lens.FactoredMatrix import FactoredMatrix  # noqa: E402
from transformer_lens.hook_points import HookPoint  # noqa: E402
from transformer_lens.HookedRootModule import HookedRootModule  # noqa: E402
from transformer_lens.utilities.slice import Slice  # noqa: E402

__all__ = ["ActivationCache", "FactoredMatrix", "HookPoint", "HookedRootModule", "Slice"]
