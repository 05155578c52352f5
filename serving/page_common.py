"""What the page's tabs share: the language menu and the model's status line."""
from __future__ import annotations

from engine.languages import LANGUAGES


def language_choices() -> list[tuple[str, str]]:
    """("Automatic", "auto") then each language by its own name and its English name; the value
    is the ISO code, which the engine maps to the exact name the model was trained with."""
    out = [("Automatic", "auto")]
    for lang in LANGUAGES:
        label = lang.english if lang.native == lang.english else f"{lang.native} — {lang.english}"
        out.append((label, lang.code))
    return out


def status_markdown(holder, loading: bool = False) -> str:
    """The model's state; ``loading``: the page has just asked for the first load."""
    info = holder.info()
    name = info["model"]
    demo = " (demo model)" if info["demo"] else ""
    if loading and not info["model_loaded"]:
        info = {**info, "loading": True}
    if info["model_loaded"]:
        state = (f"**loaded** on **{info['device']}** ({info['dtype']}) "
                 f"in {info['load_seconds']} s")
    elif info["loading"]:
        state = (f"**loading** on {info['device']} ({info['dtype']}), once, on the first "
                 "request ...")
    elif info["load_error"]:
        state = f"**failed to load**: {info['load_error'].splitlines()[0]}"
    else:
        state = (f"**not loaded yet** (loads on the first request) - device "
                 f"**{info['device']}**, {info['dtype']}")
    return f"Model: `{name}`{demo} - {state}{kernel_note(info.get('kernels'))}"


def kernel_note(k: dict | None) -> str:
    """The CPU kernels' part of the status line (empty where they are simply in use)."""
    if not k:
        return ""
    if k["state"] == "compiling":
        return (f"  \nCPU kernels: **compiling CPU kernels (once)**, {k['seconds']:.0f} s so far; "
                "until they are ready the model runs the plain PyTorch path (slower)")
    if k["state"] == "failed":
        return (f"  \nCPU kernels: **none** ({k['reason']}); the model runs the plain PyTorch "
                "path (slower)")
    if k["state"] == "ready" and k.get("in_use") is False:
        return "  \nCPU kernels: ready; switching the model onto them"
    if k["state"] == "ready":
        return f"  \nCPU kernels: {k['paths']}"
    return ""


def kernels_pending(holder) -> bool:
    """While the CPU kernels compile (or the model is switching onto them) the status line
    is refreshed every few seconds."""
    k = holder.info().get("kernels") or {}
    return k.get("state") == "compiling" or (k.get("state") == "ready" and k.get("in_use") is False)
