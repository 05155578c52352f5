"""The reference prompt (funasr 1.4.16 ``FunASRNano.get_prompt`` / ``data_load_speech``), byte for byte.

The LLM input is ``embed(prefix) ; N audio vectors ; embed(suffix)``. The reference tokenizes the
text before and after the speech span separately, so we do the same and never tokenize the span.
"""
from __future__ import annotations

SYSTEM_PROMPT = "You are a helpful assistant."

# Hotwords go into the prompt, so each token of them costs KV cache in every sequence of a batch
# (the full model: 28 layers x 8 KV heads x 128 x 2 x 4 bytes = 229 KB per token in fp32). An
# unbounded list lets one request allocate gigabytes; these caps keep a long list of names.
MAX_HOTWORDS = 100
MAX_HOTWORD_CHARS = 1000      # the list as the prompt holds it, joined with ", "
MAX_HOTWORD_TOKENS = 256      # ... and tokenized


class HotwordsError(ValueError):
    """The hotword list is over one of the caps; the message says which and by how much."""


def check_hotwords(hotwords, tokenize=None) -> None:
    """``HotwordsError`` when ``hotwords`` exceeds MAX_HOTWORDS, MAX_HOTWORD_CHARS or (with a
    ``tokenize`` callable: text -> ids) MAX_HOTWORD_TOKENS."""
    words = list(hotwords or ())
    if len(words) > MAX_HOTWORDS:
        raise HotwordsError(f"{len(words)} hotwords; at most {MAX_HOTWORDS} are accepted")
    text = ", ".join(str(w) for w in words)
    if len(text) > MAX_HOTWORD_CHARS:
        raise HotwordsError(f"the hotwords are {len(text)} characters long; at most "
                            f"{MAX_HOTWORD_CHARS} are accepted")
    if tokenize is not None and text:
        n = len(tokenize(text))
        if n > MAX_HOTWORD_TOKENS:
            raise HotwordsError(f"the hotwords are {n} tokens long; at most "
                                f"{MAX_HOTWORD_TOKENS} are accepted")
def merge_hotwords(given, extra, tokenize=None) -> list[str]:
    """``given`` (the user's own hotwords, kept whole) followed by as many of ``extra`` (in
    order, those not already given) as the caps of ``check_hotwords`` still allow."""
    given = list(given or ())
    out, seen = list(given), {w.casefold() for w in given}
    for w in extra or ():
        if w.casefold() in seen:
            continue
        try:
            check_hotwords(out + [w], tokenize)
        except HotwordsError:
            break        # the caps are reached: the rest (less severe) are left out
        out.append(w)
        seen.add(w.casefold())
    return out


HOTWORD_PREAMBLE = (
    "请结合上下文信息，更加准确地完成语音转写任务。如果没有相关信息，我们会留空。\n\n\n**上下文信息：**\n\n\n"
)


def instruction(language: str | None = None, itn: bool = True, hotwords=()) -> str:
    """The user instruction P (spec 8.1). ``language`` is the model's own name (e.g. 英文)."""
    hotwords = list(hotwords or ())
    text = ""
    if hotwords:
        text = HOTWORD_PREAMBLE + "热词列表：[" + ", ".join(hotwords) + "]\n"
    text += "语音转写" if language is None else "语音转写成" + language
    if not itn:
        text += "，不进行文本规整"
    return text + "："


def chatml_pieces(language: str | None = None, itn: bool = True, hotwords=(),
                  system_prompt: bool = True, do_think: bool = True) -> tuple[str, str]:
    """Text before and after the speech span in the ChatML source (spec 8.2)."""
    user = instruction(language, itn, hotwords)
    prefix = f"<|im_start|>user\n{user}"
    if system_prompt:
        prefix = f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n" + prefix
    suffix = "<|im_end|>\n<|im_start|>assistant\n"
    if not do_think:
        suffix += "<think>\n\n</think>\n\n"
    return prefix, suffix
