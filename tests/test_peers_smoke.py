"""Smoke test of bench/peers.py in its dry-run mode on the tiny model: ours in every mode and
the table's shape. llama.cpp is used only when its driver is already built here
(.cache/peers/build*/bin/llama_step, by a full run); otherwise the table must say that it was
not measured and why. Numbers are not checked (timings are never asserted). The sherpa-onnx
side has its own test (test_peers_sherpa.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "peers.py"


def test_peers_dry_run(tiny_model_dir, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--model-dir", str(tiny_model_dir), "--dry-run",
         "--no-build", "--peers", "llama", "--results-dir", str(tmp_path), "--threads", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("| ") and " / llama.cpp " in ln]
    # one row per (mode, N): fp32/F32, bf16/BF16, int8/Q8_0 at N = 1 and 8
    assert [r.split("|")[1].strip() for r in rows] == [
        f"{m} / llama.cpp {g}" for m, g in (("fp32", "F32"), ("bf16", "BF16"), ("int8", "Q8_0"))
        for _ in (1, 8)]
    assert [r.split("|")[2].strip() for r in rows] == ["1", "8"] * 3
    saved = json.loads(next(tmp_path.glob("*-peers-*.json")).read_text())
    assert saved["meta"]["dry_run"] is True
    for row in saved["rows"]:
        assert row["ours_decode_ms"] > 0 and row["ours_prefill_tok_s"] > 0, row
        assert row["ours_step_mb"] > 0 and row["ours_floor_ms"] > 0, row
    # a probe before the first turn and after every turn; each turn's read floor from the
    # better read of the probes on either side of it
    for mode, ent in saved["raw"].items():
        reads = [p["read_gbps"] for p in ent["probes"]]
        assert len(reads) == 1 + len(ent["ours"]) + len(ent["llama"]), (mode, ent["probes"])
        turns = [r for pair in zip(ent["ours"], ent["llama"]) for r in pair] or ent["ours"]
        assert [t["read_gbps"] for t in turns] == [max(a, b) for a, b in zip(reads, reads[1:])]
        one = [t["by_n"]["1"]["decode_ms"] / (ent["ours_weight_bytes"] / (t["read_gbps"] * 1e6))
               for t in ent["ours"]]
        row = next(r for r in saved["rows"] if r["mode"] == mode and r["n"] == 1)
        assert abs(row["ours_x_read_floor"] / sorted(one)[len(one) // 2] - 1) < 1e-9, row
    assert "x read floor, ours / peer" in proc.stdout
    from bench.peers import CACHE, llama_build_dir
    built = (llama_build_dir(CACHE) / "bin/llama_step").is_file()
    if built:
        assert all(row.get("peer_decode_ms", 0) > 0 for row in saved["rows"]), saved["meta"]
    else:
        assert any(n.startswith("llama.cpp: not measured") for n in saved["meta"]["notes"])
        assert "llama.cpp: not measured" in proc.stdout
