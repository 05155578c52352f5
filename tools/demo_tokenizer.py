"""The demo checkpoint's own LLM tokenizer: a small byte-level BPE in the Qwen3 tokenizer's format.

Same pipeline as Qwen3's tokenizer.json (NFC, the Qwen2 pre-tokenizer regex that splits digits one
by one, byte-level alphabet, byte-level decoder), trained with HF ``tokenizers`` on the demo's
training targets and the prompt strings, with a few thousand tokens instead of 151,643. The Qwen
special tokens follow the BPE tokens in Qwen's order (``<|endoftext|>``, ``<|im_start|>``,
``<|im_end|>``), so their ids are ``N``, ``N+1``, ``N+2``; the engine reads them from the
tokenizer, never from constants.

Files written (the same four as Qwen3-0.6B/ has): tokenizer.json, tokenizer_config.json,
vocab.json, merges.txt.
"""
from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

# Qwen2/Qwen3 tokenizer.json pre-tokenizer pattern.
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(texts, out_dir: str | Path, vocab_size: int = 4000) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(SPECIAL_TOKENS), min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    tok.model.save(str(out))  # vocab.json + merges.txt, as Qwen3-0.6B/ ships them
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    config = {
        "add_bos_token": False, "add_prefix_space": False,
        "added_tokens_decoder": {str(i): {"content": t, "lstrip": False, "normalized": False,
                                          "rstrip": False, "single_word": False, "special": True}
                                 for t, i in ids.items()},
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None, "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>",
        "errors": "replace", "model_max_length": 131072, "pad_token": "<|endoftext|>",
        "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer", "unk_token": None,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return tok


def padded_vocab_size(n: int, multiple: int = 64) -> int:
    """Embedding rows: the tokenizer's size rounded up, as Qwen pads 151,669 to 151,936."""
    return -(-n // multiple) * multiple
