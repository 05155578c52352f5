"""The reference's clean-up of the decoder's output text (greedy decoding is engine.batching)."""
from __future__ import annotations

import re


def clean_text(response: str) -> str:
    """``text``: /sil becomes a space and whitespace runs collapse (not stripped, as reference)."""
    return re.sub(r"\s+", " ", response.replace("/sil", " "))


def normalized_text(response: str) -> str:
    """``text_tn``: punctuation removed from the raw response (reference's regex)."""
    return re.sub(r"[^\w\s\u3000\u4e00-\u9fff]+", "", response)
