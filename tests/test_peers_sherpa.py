"""bench/peers.py's sherpa-onnx side in its dry-run mode on the tiny model: the ONNX export
(bench/sherpa_export.py), its faithfulness check, one clip decoded end to end by sherpa-onnx's
runtime and by ours, one table row per mode. Numbers are not checked (timings are never
asserted); the export must decode as ours (sherpa_export.check). sherpa-onnx is in requirements-dev.txt, so a
missing wheel fails here (the script would only note it) rather than skip."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "peers.py"


def test_peers_sherpa_dry_run(tiny_model_dir, speech_dir, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--model-dir", str(tiny_model_dir), "--dry-run",
         "--peers", "sherpa", "--modes", "fp32,int8", "--results-dir", str(tmp_path / "res"),
         "--cache", str(tmp_path / "cache"), "--threads", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=600, check=False,
        env={**os.environ, "SPEECH_DATA": str(speech_dir)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("| ") and "sherpa-onnx" in ln]
    assert [r.split("|")[1].strip() for r in rows] == [
        "fp32 / sherpa-onnx fp32", "int8 / sherpa-onnx int8"], proc.stdout
    saved = json.loads(next((tmp_path / "res").glob("*-peers-*.json")).read_text())
    assert not any("not measured" in n for n in saved["meta"]["notes"]), saved["meta"]["notes"]
    for row in saved["e2e_rows"]:
        assert row["ours_wall_s"] > 0 and row["sherpa_wall_s"] > 0, row
        assert row["ours_rss_gb"] > 0 and row["sherpa_rss_gb"] > 0, row
        # --dry-run: 4 tokens per clip on both sides (the export bans the stop tokens)
        assert row["ours_tokens"] == [4] and row["sherpa_tokens"] == [4], row
    export = tmp_path / "cache" / "sherpa" / Path(tiny_model_dir).name
    check = json.loads((export / "fp32" / "check.json").read_text())
    assert check["encoder"]["rows"] == check["encoder"]["onnx_rows"]
    assert check["encoder"]["rel_diff"] < 1e-4, check["encoder"]
    # the exported graphs decode as ours does; sherpa-onnx's runtime decodes as the graphs do
    # given its own front end and decode positions (sherpa_export.onnx_greedy)
    assert check["graphs_equal_ours"] and check["runtime_equals_graphs"], check
    for name in ("encoder_adaptor.int8.onnx", "llm.int8.onnx", "embedding.int8.onnx"):
        assert (export / "int8" / name).is_file()
