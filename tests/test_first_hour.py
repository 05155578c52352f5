"""The first hour as a new user meets it: every command that the README's Quick start and real
weights sections, the page's demo banner and the log's demo notice name exists after the Quick
start (runs with --help, and its arguments parse), and the download command, which cannot reach
a hub here, fails offline with a clear error that names the hub, the model and the reason."""
from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n{title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def _commands(text: str, indent: str = "") -> list[list[str]]:
    """`python X.py ...` and `python -m pkg.mod ...` lines (comments dropped) as argv lists."""
    found = []
    for line in text.splitlines():
        if not line.startswith(indent + "python "):
            continue
        argv = shlex.split(line.split(" #")[0])
        if argv[1] == "-m" or argv[1].endswith(".py"):
            found.append(argv)
    return found


def _named_commands() -> dict[str, list[list[str]]]:
    import app
    from serving import model_choice

    readme = "\n".join(_readme_section(t) for t in ("## Quick start", "## The real weights"))
    readme_blocks = "\n".join(re.findall(r"```bash\n(.*?)```", readme, flags=re.S))
    return {"README": _commands(readme_blocks),
            "banner": _commands(app.model_banner("models/demo", None, demo=True), "  "),
            "no-model banner": _commands(app.model_banner("/nonexistent", "missing", False), "  "),
            "log": _commands(model_choice.demo_note(), "  ")}


def _program(argv: list[str]) -> tuple[list[str], list[str]]:
    split = 3 if argv[1] == "-m" else 2
    return argv[:split], argv[split:]


def _parser(program: list[str]):
    import transcribe
    from engine import download
    from serving.settings import build_parser

    return {("python", "app.py"): build_parser, ("python", "transcribe.py"): transcribe.build_parser,
            ("python", "-m", "engine.download"): download.build_parser}[tuple(program)]()


def test_readme_banner_and_log_name_the_same_download_command():
    named = _named_commands()
    for where, commands in named.items():
        programs = {tuple(_program(c)[0]) for c in commands}
        assert ("python", "-m", "engine.download") in programs, (where, commands)
        assert ("python", "app.py") in programs, (where, commands)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "huggingface-cli" not in text     # huggingface_hub 1.x+ installs only `hf`


def test_every_named_command_runs_and_its_arguments_parse():
    programs = {}
    for where, commands in _named_commands().items():
        for argv in commands:
            program, args = _program(argv)
            _parser(program).parse_args(args)        # SystemExit (exit 2) on a wrong flag
            programs.setdefault(tuple(program), where)
    assert len(programs) >= 2
    for program, where in programs.items():
        proc = subprocess.run([sys.executable, *program[1:], "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (where, program, proc.stderr[-2000:])
        assert proc.stdout.startswith("usage: "), (where, program, proc.stdout[:200])


def _download(*args, env_extra: dict, tmp_path: Path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"),
           "MODELSCOPE_CACHE": str(tmp_path / "ms"), **env_extra}
    return subprocess.run([sys.executable, "-m", "engine.download", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_download_offline_is_a_clear_error(tmp_path):
    dest = tmp_path / "model"
    proc = _download("--source", "huggingface", "--local-dir", dest,
                     env_extra={"HF_HUB_OFFLINE": "1"}, tmp_path=tmp_path)
    assert proc.returncode == 1, proc
    assert proc.stdout == ""
    assert proc.stderr.strip() == (
        "error: could not download FunAudioLLM/Fun-ASR-MLT-Nano-2512:\n"
        "  Hugging Face: HF_HUB_OFFLINE=1 is set, and FunAudioLLM/Fun-ASR-MLT-Nano-2512 is not "
        "in the local cache"), proc.stderr


def test_download_from_an_unreachable_hub_is_a_clear_error(tmp_path):
    with socket.socket() as s:                   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    proc = _download("FunAudioLLM/Fun-ASR-Nano-2512", "--source", "huggingface", "--local-dir",
                     tmp_path / "m", env_extra={"HF_ENDPOINT": endpoint}, tmp_path=tmp_path)
    assert proc.returncode == 1, proc
    assert proc.stderr.strip() == (
        "error: could not download FunAudioLLM/Fun-ASR-Nano-2512:\n"
        f"  Hugging Face: {endpoint} is not reachable, and FunAudioLLM/Fun-ASR-Nano-2512 is not "
        "in the local cache"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_download_without_modelscope_says_how_to_get_it(monkeypatch, tmp_path):
    from engine import download

    monkeypatch.setattr(download, "modelscope_installed", lambda: False)
    with pytest.raises(download.DownloadError) as e:
        download.download(local_dir=tmp_path, source="modelscope")
    assert str(e.value) == ("could not download FunAudioLLM/Fun-ASR-MLT-Nano-2512:\n"
                            "  ModelScope: the modelscope package is not installed "
                            "(pip install modelscope)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(download.DownloadError) as e:
        download.download(local_dir=tmp_path / "m", source="auto")
    assert str(e.value).endswith("\n  ModelScope: not tried (pip install modelscope to use it)")


@pytest.mark.parametrize("args, message", [
    (["--local", "x"], "error: unrecognized arguments: --local\n"),     # no abbreviations
    (["--source", "github"], "argument --source: invalid choice: 'github'"),
])
def test_download_flags_are_checked(args, message, capsys):
    from engine import download

    with pytest.raises(SystemExit) as e:
        download.build_parser().parse_args(args)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
