"""The command lines as a new user meets them: --help with the real defaults and help for every
flag, no argparse abbreviations anywhere, the README's synopsis complete, --quiet quiet."""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo"


def _run(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


def _parsers():
    import transcribe
    from serving.settings import build_parser

    return {"transcribe.py": transcribe.build_parser(), "app.py": build_parser()}


@pytest.mark.parametrize("name", ["transcribe.py", "app.py"])
def test_every_flag_has_help_and_help_shows_real_defaults(name):
    parser = _parsers()[name]
    for action in _options(parser):
        assert action.help and action.help != argparse.SUPPRESS, action.option_strings
    proc = _run(ROOT / name, "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())    # argparse wraps lines anywhere
    assert "default: None" not in text and "(default: False)" not in text, text
    if name == "transcribe.py":
        for flag, default in (("--batch-size", "8"), ("--max-new-tokens", "512"),
                              ("--max-segment-seconds", "30"), ("--language", "auto"),
                              ("--format", "json")):
            assert re.search(re.escape(flag) + r".*?\(default: " + re.escape(default), text), flag
    else:
        for flag, default in (("--port", "7860"), ("--host", "127.0.0.1"),
                              ("--batch-size", "8"), ("--max-new-tokens", "512")):
            assert re.search(re.escape(flag) + r" \S+ .*?\(default: " + re.escape(default),
                             text), flag


def test_abbreviated_flags_are_errors(capsys):
    """`--lang en` used to be taken silently as `--language en`, `--po` as `--port`."""
    parsers = _parsers()
    cases = {"transcribe.py": (["--lang", "en", "a.wav"], "--lang"),
             "app.py": (["--po", "1234"], "--po")}
    for name, (argv, bad) in cases.items():
        with pytest.raises(SystemExit) as e:
            parsers[name].parse_args(argv)
        assert e.value.code == 2
        assert f"unrecognized arguments: {bad}" in capsys.readouterr().err, name
    # and from the real command line
    proc = _run(ROOT / "transcribe.py", "--lang", "en", ROOT / "example" / "en.wav")
    assert proc.returncode == 2 and "unrecognized arguments: --lang" in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_every_argument_parser_in_the_project_refuses_abbreviations():
    """Each ``argparse.ArgumentParser(...)`` call in the repository's Python files says
    ``allow_abbrev=False`` (abbreviations are argparse's default)."""
    calls, without = 0, []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0].startswith(".") or "node_modules" in rel.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(rel))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if name != "ArgumentParser":
                continue
            calls += 1
            kw = {k.arg: k.value for k in node.keywords}
            v = kw.get("allow_abbrev")
            if not (isinstance(v, ast.Constant) and v.value is False):
                without.append(f"{rel}:{node.lineno}")
    assert calls >= 10, calls            # the walk found the project's parsers
    assert not without, without


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n{title}\n")
    end = text.find("\n#", start + len(title) + 2)
    while end != -1 and text[end:end + 4] != "\n## " and text[end:end + 5] != "\n### ":
        end = text.find("\n#", end + 1)
    return text[start:end if end != -1 else None]


def test_readme_synopsis_and_docstring_name_every_flag():
    parser = _parsers()["transcribe.py"]
    section = _readme_section("### Command line")
    synopsis = section.split("```bash", 1)[1].split("```", 1)[0]
    ray_flags = {o for g in parser._action_groups if g.title and "Ray" in g.title
                 for a in g._group_actions for o in a.option_strings}
    assert "--ray" in ray_flags
    import transcribe
    ray_docs = (ROOT / "docs" / "scaling.md").read_text(encoding="utf-8")
    for action in _options(parser):
        flag = action.option_strings[-1]
        if flag in ray_flags:            # documented in docs/scaling.md's Ray Data section
            assert f"`{flag}" in ray_docs or f" {flag} " in ray_docs, flag
            continue
        assert re.search(re.escape(flag) + r"\b", synopsis), f"README synopsis lacks {flag}"
        assert re.search(re.escape(flag) + r"\b", transcribe.__doc__), f"docstring lacks {flag}"
    quick = _readme_section("## Quick start")
    assert "git clone" in quick and "cd " in quick


def test_quiet_is_quiet(tmp_path):
    """No --model and no official weights: the demo, with its notice; --quiet silences the
    notice, the log and the progress (the results are the same)."""
    from engine.kernels import state

    if not (DEMO / "model.pt").is_file():
        from tests._fixtures import missing
        missing(f"no demo checkpoint: {DEMO / 'model.pt'} is missing")
    env = {k: v for k, v in os.environ.items() if k != "FUNASR_NANO_MODEL"}
    env.update(HF_HOME=str(tmp_path / "hf"), MODELSCOPE_CACHE=str(tmp_path / "ms"))
    clip = ROOT / "example" / "en.wav"
    loud = _run(ROOT / "transcribe.py", "--max-new-tokens", "32", clip, env=env)
    quiet = _run(ROOT / "transcribe.py", "--max-new-tokens", "32", "--quiet", clip, env=env)
    assert loud.returncode == 0 and quiet.returncode == 0, (loud.stderr, quiet.stderr)
    assert "DEMO model" in loud.stderr and "1/1 files" in loud.stderr, loud.stderr
    texts = [json.loads(p.stdout)["text"] for p in (loud, quiet)]
    assert texts[0] == texts[1] and texts[0].strip(), texts
    if state()["state"] == "ready":      # else the kernels' own warning is rightly there
        assert quiet.stderr == "", quiet.stderr
    else:
        assert "DEMO model" not in quiet.stderr and "INFO" not in quiet.stderr, quiet.stderr
