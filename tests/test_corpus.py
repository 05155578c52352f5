"""Corpus transcription on Ray Data (``transcribe.py --ray``, serving/corpus.py), run for real
as the CLI on conftest's local 2-CPU Ray cluster with the tiny random-weight model."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _app_server import MAX_NEW_TOKENS, app_model_dir, engine  # noqa: E402,F401

from serving.corpus import expand_inputs, load_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(speech_dir, tmp_path_factory) -> dict:
    """30 inputs: the 10 real clips of the speech manifest (given as the manifest), and a folder
    of 20: 17 clips cut, mixed and resampled from them, one 40 s recording (long-form path),
    a text file named .wav and a truncated MP3."""
    from engine.audio import load_audio

    d = tmp_path_factory.mktemp("corpus") / "calls"
    (d / "day2").mkdir(parents=True)
    clips = [load_audio(speech_dir / line.split("\t")[0]) for line in
             (speech_dir / "manifest.tsv").read_text().splitlines()[1:] if line.strip()]
    rng = np.random.default_rng(1)
    for i in range(17):
        a, b = clips[i % len(clips)], clips[(3 * i + 1) % len(clips)]
        start = int(rng.integers(0, max(1, len(a) // 3)))
        wave = np.concatenate([a[start:], np.zeros(4000, np.float32), b[: len(b) // 2]])
        sub = d / "day2" if i % 3 == 0 else d
        if i % 4 == 0:
            import soxr
            sf.write(sub / f"call{i:02d}.flac", soxr.resample(wave, 16000, 22050), 22050)
        else:
            sf.write(sub / f"call{i:02d}.wav", wave, 16000)
    parts = []
    while sum(len(p) for p in parts) < 40 * 16000:
        for c in clips:
            parts += [c, np.zeros(12000, np.float32)]
    sf.write(d / "meeting.wav", np.concatenate(parts), 16000)
    (d / "notes.wav").write_text("minutes of the meeting, not audio\n" * 40)
    mp3 = next(speech_dir.rglob("*.mp3"))
    (d / "cut.mp3").write_bytes(mp3.read_bytes()[: 600])
    inputs = [str(speech_dir / "manifest.tsv"), str(d)]
    files = [f for f, _ in expand_inputs(inputs)]
    assert len(files) == 30
    return {"inputs": inputs, "files": files, "bad": {str(d / "notes.wav"), str(d / "cut.mp3")},
            "long": str(d / "meeting.wav")}


def run_cli(cluster, args, **kw) -> subprocess.Popen:
    env = {k: v for k, v in cluster.env().items() if not k.startswith("FUNASR_NANO_")}
    return subprocess.Popen([sys.executable, str(ROOT / "transcribe.py"), "--ray", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def test_corpus_of_30_with_2_bad_files_killed_halfway_then_resumed(
        ray_cluster, app_model_dir, engine, corpus, tmp_path):
    from engine.longform import transcribe_long

    out = tmp_path / "out"
    args = ["--model", app_model_dir, "--replicas", "2", "--num-cpus", "1",
            "--files-per-call", "1", "--max-new-tokens", str(MAX_NEW_TOKENS),
            "--format", "srt", "--output-dir", str(out), *corpus["inputs"]]
    results = out / "results.jsonl"

    # 1. killed (SIGKILL, no chance to clean up) once a few results are in
    first = run_cli(ray_cluster, args)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None:
        if results.exists() and results.read_bytes().count(b"\n") >= 4:
            break
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    lines_before = results.read_bytes().decode().splitlines(keepends=True)
    kept = {json.loads(line)["file"]: line for line in lines_before
            if line.endswith("\n") and not json.loads(line)["error"]}
    assert 4 <= len(lines_before) < 30, "the first run was not stopped halfway"

    # 2. the rerun decodes only the rest
    second = run_cli(ray_cluster, args)
    stdout, stderr = second.communicate(timeout=600)
    assert second.returncode == 1, stderr[-3000:]          # two inputs failed
    assert f"30 files: {len(kept)} already in" in stderr
    assert f"{30 - len(kept)} to transcribe" in stderr
    final_lines = results.read_text(encoding="utf-8").splitlines(keepends=True)
    for line in kept.values():
        assert line in final_lines                          # untouched, not decoded again
    rows = [json.loads(line) for line in final_lines]
    assert sorted(r["file"] for r in rows) == sorted(corpus["files"])   # one line per file
    errors = {r["file"]: r["error"] for r in rows if r["error"]}
    assert set(errors) == corpus["bad"]
    assert "not an audio file" in errors[next(f for f in errors if f.endswith("notes.wav"))]
    assert "done: 28 transcribed, 2 failed" in stderr
    assert all(f"error: {e}" in stderr for e in errors.values())

    # the same texts as the single-process engine, file by file
    opts = dict(max_new_tokens=MAX_NEW_TOKENS)
    for r in rows:
        if r["error"]:
            continue
        if r["file"] == corpus["long"]:
            want = transcribe_long(engine, r["file"], **opts)
            assert len(r["segments"]) == len(want["segments"]) >= 2
        else:
            [want] = engine.transcribe([r["file"]], **opts)
        assert r["text"] == want["text"], r["file"]
        assert set(r) >= {"key", "file", "text", "duration", "processing_time", "segments", "error"}
    # a subtitle file per transcribed input, named by its place in its folder or manifest
    srts = sorted(str(p.relative_to(out)) for p in out.rglob("*.srt"))
    assert len(srts) == 28
    assert "day2/call00.srt" in srts and "meeting.srt" in srts
    assert any(s.startswith(("en/", "zh/")) for s in srts)
    meeting = (out / "meeting.srt").read_text(encoding="utf-8")
    assert meeting.startswith("1\n00:00:") and "\n2\n" in meeting

    # 3. a third run has nothing left but the two bad files
    third = run_cli(ray_cluster, args)
    _, stderr = third.communicate(timeout=600)
    assert third.returncode == 1 and "30 files: 28 already in" in stderr
    assert "2 to transcribe" in stderr


def test_inputs_files_dirs_globs_and_manifests(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/x.wav", "a/y.flac", "b.mp3", "c.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "list.tsv").write_text("speaker\tpath\nann\ta/x.wav\nbob\tb.mp3\n")
    (tmp_path / "plain.tsv").write_text(f"{tmp_path / 'b.mp3'}\t12.5\n")
    (tmp_path / "list.jsonl").write_text('{"audio": "a/y.flac"}\n\n{"file": "other/x.wav"}\n')
    got = expand_inputs([str(tmp_path / "a"), str(tmp_path / "list.tsv"), str(tmp_path / "*.mp3"),
                         str(tmp_path / "plain.tsv"), str(tmp_path / "list.jsonl"),
                         str(tmp_path / "missing.wav")])
    t = str(tmp_path)
    assert got == [(f"{t}/a/x.wav", "x"), (f"{t}/a/y.flac", "y"), (f"{t}/b.mp3", "b"),
                   (f"{t}/other/x.wav", "other/x"), (f"{t}/missing.wav", "missing")]
    from serving.corpus import InputError
    with pytest.raises(InputError, match="no audio files"):
        expand_inputs([str(_empty(tmp_path))])
    with pytest.raises(InputError, match="matches no file"):
        expand_inputs([str(tmp_path / "*.ogg")])
    (tmp_path / "bad.jsonl").write_text('{"path": "a/x.wav"}\nnot json\n')
    with pytest.raises(InputError, match="bad.jsonl:2"):
        expand_inputs([str(tmp_path / "bad.jsonl")])


def _empty(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    (d / "readme.txt").write_text("no audio here")
    return d


def test_results_file_cut_by_a_kill_is_repaired(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"file": "a.wav", "text": "x", "error": null}\n{"file": "b.wa')
    assert list(load_results(path)) == ["a.wav"]
    assert path.read_text().endswith("null}\n")              # appending starts on a new line
