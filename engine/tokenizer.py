"""Tokenizers: the LLM's (Qwen3 tokenizer.json via HF ``tokenizers``) and the CTC branch's
(Whisper-style tiktoken ranks from ``multilingual.tiktoken`` plus SenseVoice special tokens)."""
from __future__ import annotations

import base64
import json
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer


class TextTokenizer:
    """The LLM tokenizer. ``tokenizers`` reads the same tokenizer.json that transformers'
    AutoTokenizer uses, without importing transformers (seconds of start-up)."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (the LLM tokenizer of the model directory)")
        self.tok = Tokenizer.from_file(str(path))
        self.special_ids = {t.content: i for i, t in self.tok.get_added_tokens_decoder().items()
                            if t.special}
        self.im_end = self.token_id("<|im_end|>")
        self.endoftext = self.token_id("<|endoftext|>")

    def token_id(self, token: str) -> int:
        tid = self.tok.token_to_id(token)
        if tid is None:
            raise ValueError(f"tokenizer has no {token!r} token")
        return tid

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    @lru_cache(maxsize=256)  # noqa: B019 - one tokenizer per model, alive as long as the model
    def _encode(self, text: str) -> tuple[int, ...]:
        return tuple(self.tok.encode(text, add_special_tokens=False).ids)

    def encode(self, text: str) -> list[int]:
        return list(self._encode(text))

    def decode(self, ids) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)


# SenseVoice's special tokens after the BPE ranks (funasr whisper_lib/tokenizer.py get_encoding):
# their count fixes where the timestamp tokens start, which decode() drops.
_WHISPER_LANGS = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th "
    "ur hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr "
    "pa si km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt "
    "haw ln ha ba jw su yue minnan wuyu dialect zh/en en/zh").split()
_AUDIO_EVENTS = "ASR AED SER Speech /Speech BGM /BGM Laughter /Laughter Applause /Applause".split()
_EMOTIONS = "HAPPY SAD ANGRY NEUTRAL".split()
_CTC_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class CTCTokenizer:
    """tiktoken over ``multilingual.tiktoken``; only the CTC branch uses it."""

    def __init__(self, vocab_path: str | Path):
        import tiktoken

        ranks = {}
        for line in Path(vocab_path).read_text().splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
        specials = ["<|endoftext|>", "<|startoftranscript|>",
                    *[f"<|{x}|>" for x in _WHISPER_LANGS],
                    *[f"<|{x}|>" for x in _AUDIO_EVENTS], *[f"<|{x}|>" for x in _EMOTIONS],
                    "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>",
                    "<|nospeech|>", "<|notimestamps|>",
                    *[f"<|SPECIAL_TOKEN_{i}|>" for i in range(1, 51)],
                    *[f"<|{i * 0.02:.2f}|>" for i in range(1501)]]
        n = len(ranks)
        special_ids = {tok: n + i for i, tok in enumerate(specials)}
        self.timestamp_begin = special_ids["<|0.00|>"]
        self.enc = tiktoken.Encoding(name=Path(vocab_path).name, pat_str=_CTC_PATTERN,
                                     mergeable_ranks=ranks, special_tokens=special_ids,
                                     explicit_n_vocab=n + len(specials))
        self.n_vocab = n + len(specials)

    def encode(self, text: str) -> list[int]:
        # Special-token strings inside a transcript are plain text here, as in the reference.
        return self.enc.encode(text, disallowed_special=())

    def decode(self, ids) -> str:
        return self.enc.decode([i for i in ids if i < self.timestamp_begin])

    def decode_token(self, tid: int) -> str:
        return self.enc.decode_single_token_bytes(tid).decode("utf-8", errors="replace")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
