"""The proof method (branch and bound over cells). Being built on branch issue26: until it lands,
``method="proof"`` says so in one line rather than returning any number."""

from __future__ import annotations

from typing import Any

from interp.certificate.result import Certificate, CertificateUnsupported


def prove(model: Any, seq_len: int, **options: Any) -> Certificate:
    """Not built yet on this commit; see docs/certificate-engine.md."""
    raise CertificateUnsupported("method='proof' is not built yet on this commit (use method='enumeration')")
