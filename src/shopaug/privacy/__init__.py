"""shopaug.privacy: personal data kept out of what shopaug stores, writes and sends.

``pii`` finds and replaces e-mail addresses, phone numbers, payment card numbers, IBANs and
street addresses in free text. It sits below every other package (it imports none of them), so
the feedback store, the LLM client and the samples writer all scrub with the same rules.
Differential privacy for training lives with the training loop (:mod:`shopaug.train.dp`).
"""

from __future__ import annotations

from shopaug.privacy.pii import (
    PII_KINDS,
    PiiMatch,
    PiiScrubber,
    ScrubResult,
    default_scrubber,
    scrub_text,
)

__all__ = [
    "PII_KINDS",
    "PiiMatch",
    "PiiScrubber",
    "ScrubResult",
    "default_scrubber",
    "scrub_text",
]
