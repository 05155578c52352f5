"""Smoke test of bench/benchmark.py: one short case on the tiny model, table shape checked.

Runs the real script end to end (parent + one child per engine and mode, the bandwidth child),
with a 64 MiB bandwidth probe and 4 tokens so it stays quick. The reference is included when
funasr is installed. Numbers are not checked: only that every row and column is there.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "benchmark.py"
COLUMNS = ["case", "mode", "engine", "load s", "peak RSS GB", "frontend ms", "encoder ms",
           "prefill ms", "decode ms/step", "floor ms", "x floor", "e2e s", "RTF", "tok/s",
           "vs ref e2e", "vs ref decode"]


@pytest.fixture
def model_dir(request, tmp_path_factory):
    try:  # the shared session fixture (tests/conftest.py) when it exists
        return Path(request.getfixturevalue("tiny_model_dir"))
    except pytest.FixtureLookupError:
        out = tmp_path_factory.mktemp("tiny-model")
        subprocess.run([sys.executable, str(REPO / "tools/make_random_model.py"), "--out",
                        str(out), "--size", "tiny", "--seed", "0"], check=True, cwd=REPO)
        return out


def _has_funasr() -> bool:
    import importlib.util
    return importlib.util.find_spec("funasr") is not None


def _tables(stdout: str) -> list[list[list[str]]]:
    """Every markdown table in the output, as lists of cells."""
    tables, cur = [], []
    for ln in stdout.splitlines() + [""]:
        if ln.startswith("|"):
            cur.append([c.strip() for c in ln.strip().strip("|").split("|")])
        elif cur:
            tables.append(cur)
            cur = []
    return tables


def _table(stdout: str) -> list[list[str]]:
    return _tables(stdout)[0]


def test_benchmark_smoke(model_dir, tmp_path):
    engines = ["ours"] + (["reference"] if _has_funasr() else [])
    modes = ["fp32", "bf16", "nosuchmode"]  # an unknown mode must be reported, not fatal
    out_json = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--model-dir", str(model_dir), "--cases", "1x10s",
         "--repeats", "1", "--tokens", "4", "--modes", ",".join(modes),
         "--engines", ",".join(engines), "--results-dir", str(tmp_path / "results"),
         "--json", str(out_json), "--bw-bytes", str(64 * 2 ** 20)],
        capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]

    table = _table(proc.stdout)
    assert table[0] == COLUMNS
    body = {(r[0], r[1], r[2]): r for r in table[2:]}
    for mode in ("fp32", "bf16"):
        for engine in engines:
            row = body[("1x10s", mode, engine)]
            assert len(row) == len(COLUMNS)
            assert row[COLUMNS.index("load s")] != "failed", row
            for col in ("e2e s", "RTF", "tok/s", "encoder ms", "decode ms/step", "floor ms"):
                float(row[COLUMNS.index(col)])  # a number, not "-"
        if "reference" in engines:
            assert body[("1x10s", mode, "ours")][COLUMNS.index("vs ref e2e")].endswith("x")
    # the agreement table: the reference in fp32 gives exactly our fp32 texts
    agree = _tables(proc.stdout)[1]
    assert agree[0] == ["case", "engine", "mode", "same text as ours fp32", "CER vs ours fp32"]
    by = {(r[1], r[2]): r for r in agree[2:]}
    assert ("ours", "bf16") in by
    if "reference" in engines:
        assert by[("reference", "fp32")][3] == "1/1" and by[("reference", "fp32")][4] == "0.0%"
    bad = body[("1x10s", "nosuchmode", "ours")]
    assert bad[COLUMNS.index("load s")] == "failed"
    assert "nosuchmode" in proc.stdout.split("Errors and notes:")[1]

    result = json.loads(out_json.read_text())
    ok = [r for r in result["rows"] if "e2e_s" in r]
    assert len(ok) == 2 * len(engines)
    assert all(r["tokens_ok"] for r in ok), "exact token count not honoured"
    assert result["meta"]["bandwidth"]["copy_gbps"] > 0
    written = list((tmp_path / "results").glob("*.md"))
    assert len(written) == 1 and len(list((tmp_path / "results").glob("*.json"))) == 1
    assert "| case | mode | engine |" in written[0].read_text()


@pytest.mark.parametrize("mode", ["fp32", "int8"])
def test_floor_counts_every_decode_weight_once(tiny_model_dir, mode):
    """The floor's bytes: each decoder projection and the lm_head once (their int8 tensors in
    int8 mode, which are unpacked afresh for every state dict; the lm_head's int8 copy where the
    greedy pick is screened by it), plus the norms."""
    from bench.benchmark import decode_weight_bytes
    from model import FunASRNano
    llm = FunASRNano.from_pretrained(str(tiny_model_dir), device="cpu", dtype=mode).llm
    per_weight = 1 if mode == "int8" else 2  # int8, or the bf16 checkpoint's own tensors
    want = 0
    screened = llm.exact_argmax is not None  # fp32 on VNNI CPUs: the lm_head's int8 copy
    for name, mod in [*llm.model.layers.named_modules(), ("lm_head", llm.lm_head)]:
        if hasattr(mod, "out_features") and hasattr(mod, "in_features"):
            if name == "lm_head" and screened:  # int8 rows, then a scale, sum and 2 bound terms
                want += mod.out_features * (mod.in_features + 4 * 4)
            else:
                want += mod.out_features * mod.in_features * per_weight
    norms = [m.weight for m in llm.model.modules() if type(m).__name__ == "RMSNorm"]
    want += sum(w.numel() * w.element_size() for w in norms)
    assert decode_weight_bytes(llm) == want


def test_load_benchmark_smoke(tiny_model_dir, speech_dir, tmp_path):
    """bench/load.py end to end on the tiny model (--quick): both apps started and stopped, the
    engine child beside them and a baseline revision's (HEAD's files), every case of the table
    there with numbers, the scheduler's concurrent texts equal to those of the one-at-a-time
    path, results written. Numbers are not checked."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "load.py"), "--model-dir", str(tiny_model_dir),
         "--quick", "--dtype", "fp32", "--results-dir", str(tmp_path / "results"),
         "--baseline-rev", "HEAD", "--trees-dir", str(tmp_path / "trees")],
        capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    table = _table(proc.stdout)
    assert table[0][:8] == ["case", "path", "wall s", "p50 s", "p95 s", "max s", "req/s",
                            "audio s per s"]
    cases = {(r[0], r[1]): r for r in table[2:]}
    for path in ("one at a time (--scheduler serial)", "scheduler (--scheduler batch)"):
        for case in ("lone 1 x 2 s", "2 x 2 s concurrent", "1 x 2 s during a 3 min file"):
            float(cases[(case, path)][3])  # p50: a number
        assert float(cases[("2 x 2 s concurrent", path)][2]) > 0  # wall: first send to last answer
    engine = cases[("engine: one 2-file batch (no HTTP), all repeats", "FunASRNano.transcribe")]
    assert float(engine[2]) > 0
    assert any(case.startswith("engine: lone") and path.startswith("HEAD (")
               for case, path in cases)
    assert "scheduler vs each decoded alone (one at a time): **same**" in proc.stdout
    result = json.loads(next((tmp_path / "results").glob("*.json")).read_text())
    assert [m["mode"] for m in result["modes"]] == ["serial", "batch"]
    assert result["baseline"]["same_texts"]  # HEAD's files: the same engine
    # --bench-tokens: every sequence ran to its forced token count
    assert all(f == "length" for m in result["modes"] for f in m["concurrent"]["finish"])
