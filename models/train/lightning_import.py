"""PyTorch Lightning, imported without Hugging Face transformers:
``from models.train.lightning_import import pl``.

Importing ``pytorch_lightning`` imports ``torchmetrics``, whose text metrics (BERTScore, InfoLM) import
``transformers.AutoModel`` whenever ``transformers`` is installed — and it is, as a dependency of
transformer-lens. That cost 1.4 CPU s (6.6 → 5.2 s to import ``models.train.cli`` and the Lightning
module, three alternating runs each) in every process that trains (each training command, each zoo
task, each test worker), for metrics this project never uses. So when this module is the first
to import Lightning in a process, torchmetrics' availability check (``lightning_utilities``'
``RequirementCache``) is told, for the duration of that import only, that ``transformers`` is not
installed: torchmetrics skips it. The one consequence: in such a process, torchmetrics' metrics built
on transformers (BERTScore, InfoLM, CLIPScore, CLIP-IQA) report that they need it. A process that
imported torchmetrics or transformers before gets Lightning as it is; so does one whose
``lightning_utilities`` lacks the function patched.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def _transformers_hidden_from_torchmetrics() -> Iterator[None]:
    if "torchmetrics" in sys.modules or "transformers" in sys.modules:
        yield
        return
    try:
        from lightning_utilities.core import imports
    except ImportError:
        yield
        return
    original = getattr(imports, "_version", None)
    not_found = getattr(imports, "PackageNotFoundError", None)
    if original is None or not_found is None:
        yield
        return

    def version(name: str) -> str:
        if name == "transformers":
            raise not_found(name)
        return original(name)

    imports._version = version
    try:
        yield
    finally:
        imports._version = original


with _transformers_hidden_from_torchmetrics():
    import pytorch_lightning as pl

__all__ = ["pl"]
