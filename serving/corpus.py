"""Transcribing a corpus: the batch CLI's per-file logic, and the same on Ray Data.

    python transcribe.py --ray --output-dir OUT [--replicas N] [--format srt] INPUT...

INPUT is any mix of audio files, directories (searched recursively for audio), glob patterns
and manifests (``.tsv``: a ``path`` / ``file`` / ``audio`` column, else the first; ``.jsonl``:
the same keys; relative paths are taken from the manifest's folder). Each file is one row of a
Ray Dataset; an actor pool of ``--replicas`` model replicas (``--num-cpus`` / ``--num-gpus``
each) transcribes a few files per call with ``transcribe_files``, exactly as the single-process
CLI does (long files are cut at pauses by engine.longform). The driver appends one line per file
to ``OUT/results.jsonl`` as results arrive (``--format json``'s fields) and, with
``--format srt|vtt|txt|tsv``, writes ``OUT/KEY.<format>`` per transcribed file.

Resumable: a rerun skips every file that already has a line without ``error`` in
``results.jsonl``; files that failed are tried again (their old lines are dropped). A line cut
short by a kill is ignored. The exit status is the CLI's: 1 when any input has an error, 2 when
nothing could run (bad options, no model, no input), 0 otherwise.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("funasr_nano.corpus")

AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".mp4", ".webm",
                  ".mka", ".mkv", ".wma", ".aiff", ".aif"}
JSON_FIELDS = ("key", "file", "text", "text_tn", "language", "language_name",
               "language_probability", "duration",
               "processing_time", "segments", "words", "timestamps", "finish_reason", "error",
               "speakers", "turns", "speakers_error", "compliance")
RESULTS = "results.jsonl"
MANIFEST_KEYS = ("path", "file", "audio", "audio_path", "filename")


# --------------------------------------------------------------------------- per-file logic

def transcribe_files(asr, files: list[str], *, language=None, itn=True, hotwords=(),
                     batch_size=8, max_new_tokens=512, max_segment_s=None,
                     progress=None, quiet=False, speakers=None, words=False) -> list[dict]:
    """One result dict per file, in order: files decoded whole (serving.pipeline.route: up to
    ``max_segment_s``, default the model's 30 s) ``batch_size`` at a time, longer ones through
    ``engine.longform.transcribe_long``, in the order serving.pipeline.decode_routed sets for
    every caller (the page's and the API's rows come from the same). What the CLI prints and
    what each Ray worker returns. ``speakers``: an engine.speakers.options.SpeakerRequest: every file is
    diarized and its speaker turns transcribed (serving.diarized). ``words``: word timings
    (engine.alignment) in ``words`` and in each segment."""
    from engine import MAX_UTTERANCE_S
    from engine.audio import probe_duration
    from engine.longform import transcribe_long

    from .pipeline import decode_routed, route

    if max_segment_s is None:
        max_segment_s = MAX_UTTERANCE_S

    opts = dict(language=language, itn=itn, hotwords=list(hotwords), words=words)
    results: dict[int, dict] = {}
    routes = []
    for f in files:
        try:
            duration = probe_duration(f)
        except Exception:  # noqa: BLE001 - the decoder reports the real reason below
            duration = 0.0
        routes.append((route(duration, speakers, max_segment_s), f))
    n_short = sum(1 for r, _ in routes if r == "short")

    def decode_short(chunk):
        t0 = time.perf_counter()
        out = asr.transcribe([f for _, f in chunk], batch_size=batch_size,
                             max_new_tokens=max_new_tokens, **opts)
        per_file = round((time.perf_counter() - t0) / len(chunk), 3)
        for (i, _), r in zip(chunk, out):
            r["processing_time"] = per_file
            if r.get("error") is None:
                seg = {"start": 0.0, "end": r["duration"], "text": r["text"].strip()}
                if r.get("finish_reason") == "repetition":   # the guard cut a loop here
                    seg["flag"] = "repetition"
                if words:
                    seg["words"] = r.get("words") or []
                r["segments"] = [seg]
            results[i] = r
        if progress:
            done = sum(1 for i in results if routes[i][0] == "short")
            progress(min(done, n_short), n_short)

    def decode_long(i, f):
        t0 = time.perf_counter()

        def segments_done(done, total):
            if not quiet:
                print(f"\r{f}: {done}/{total} segments", end="", file=sys.stderr)

        def run(spans=None):
            return transcribe_long(asr, f, batch_size=batch_size, max_segment_s=max_segment_s,
                                   progress=segments_done, max_new_tokens=max_new_tokens,
                                   spans=spans, **opts)
        if speakers is not None:
            from .diarized import transcribe_with_speakers
            res = transcribe_with_speakers(f, f, speakers, run)
            res.pop("diarization", None)
        else:
            res = run()
        if not quiet:
            print(file=sys.stderr)
        res.setdefault("key", Path(f).stem)
        res["file"] = f
        res["processing_time"] = round(time.perf_counter() - t0, 3)
        results[i] = res

    decode_routed(routes, batch_size, decode_short, decode_long)
    return [results[i] for i in range(len(files))]


def words_wanted(args) -> bool:
    """Word timings: asked for (--word-timestamps), or a subtitle/TSV format, whose cues and
    rows are timed by them."""
    return bool(getattr(args, "word_timestamps", False)) or args.format in ("srt", "vtt", "tsv")


def render(r: dict, fmt: str) -> str:
    """One result as ``--format`` prints it (json: one line of JSON_FIELDS; txt: the text;
    the others by serving.formats.file_text, as the page's downloads and the API write them)."""
    from .formats import file_text

    if fmt == "json":
        return json.dumps({k: r.get(k) for k in JSON_FIELDS if k in r or k == "error"},
                          ensure_ascii=False)
    if fmt == "txt":
        return r.get("text", "").strip() + "\n"
    return file_text(r, fmt)


# --------------------------------------------------------------------------- inputs

class InputError(ValueError):
    """An INPUT that names nothing usable (the message says which and why)."""


def expand_inputs(inputs: list[str]) -> list[tuple[str, str]]:
    """Files, directories, globs and manifests -> ``(audio path, output key)`` in order, without
    repeated paths. The key names the file's subtitle output: its path inside the directory or
    manifest it came from, without the suffix (``en/a``), else its stem; a key taken twice gets
    ``-2``, ``-3``, ..."""
    found: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not files:
                raise InputError(f"{item}: no audio files in this directory")
            found += [(str(p), str(p.relative_to(path).with_suffix(""))) for p in files]
        elif path.suffix.lower() in (".tsv", ".jsonl") and path.is_file():
            found += [(str(path.parent / e) if not os.path.isabs(e) else e,
                       str(Path(e).with_suffix("")) if not os.path.isabs(e) else Path(e).stem)
                      for e in _read_manifest(path)]
        elif not path.exists() and glob.has_magic(item):
            files = sorted(p for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not files:
                raise InputError(f"{item}: the pattern matches no file")
            found += [(p, Path(p).stem) for p in files]
        else:   # a file; a missing one is reported per file ("file not found"), as by the CLI
            found.append((item, path.stem))
    seen: set[str] = set()
    taken: dict[str, int] = {}
    out = []
    for p, key in found:
        if p in seen:
            continue
        seen.add(p)
        n = taken[key] = taken.get(key, 0) + 1
        out.append((p, key if n == 1 else f"{key}-{n}"))
    return out


def _read_manifest(path: Path) -> list[str]:
    """The paths a manifest lists, as written (relative ones are to its folder)."""
    entries: list[str] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix.lower() == ".jsonl":
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{n}: not a JSON line ({e.msg})") from None
            value = next((row[k] for k in MANIFEST_KEYS if isinstance(row, dict) and k in row),
                         None)
            if not isinstance(value, str):
                raise InputError(f"{path}:{n}: no {' / '.join(MANIFEST_KEYS[:3])} field")
            entries.append(value)
    else:
        rows = [line.split("\t") for line in lines if line.strip()]
        if not rows:
            raise InputError(f"{path}: the manifest is empty")
        header = [c.strip().lower() for c in rows[0]]
        column = next((header.index(k) for k in MANIFEST_KEYS if k in header), None)
        if column is None:   # no header: the first column holds the paths
            column, body = 0, rows
        else:
            body = rows[1:]
        entries = [r[column].strip() for r in body if len(r) > column and r[column].strip()]
    return entries


# --------------------------------------------------------------------------- results file

def load_results(path: Path) -> dict[str, dict]:
    """file -> its last complete result line; a line cut short by a kill is dropped (and
    removed, so that appending starts on a fresh line)."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[:data.rfind(b"\n") + 1]
        path.write_bytes(data)
    done: dict[str, dict] = {}
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("file"), str):
            done[row["file"]] = row
    return done


def rewrite_results(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- Ray Data

class CorpusWorker:
    """One model replica of the actor pool: a batch of file paths -> their result lines."""

    def __init__(self, model_path: str, device, dtype, options: dict):
        from model import FunASRNano
        self.asr = FunASRNano.from_pretrained(model_path, device=device, dtype=dtype)
        self.options = options

    def __call__(self, batch: dict) -> dict:
        files = [str(f) for f in batch["file"]]
        keys = [str(k) for k in batch["key"]]
        try:
            results = transcribe_files(self.asr, files, quiet=True, **self.options)
        except Exception as e:  # noqa: BLE001 - the batch's files get the error, the run goes on
            log.exception("transcribing %s failed", files)
            results = [{"key": Path(f).stem, "file": f, "text": "", "error":
                        f"{f}: transcription failed: {e}"} for f in files]
        lines = []
        for f, key, r in zip(files, keys, results):
            r["file"] = f
            r["output_key"] = key
            lines.append(json.dumps(r, ensure_ascii=False, default=float))
        return {"file": files, "result": lines}


def add_arguments(parser) -> None:
    """transcribe.py's --ray flags."""
    g = parser.add_argument_group("corpus on Ray (--ray)")
    g.add_argument("--ray", action="store_true",
                   help="transcribe on Ray Data (joins RAY_ADDRESS if set, else a local "
                   "cluster); needs --output-dir; INPUT may also be directories, globs and "
                   ".tsv/.jsonl manifests; resumable")
    g.add_argument("--replicas", type=int, default=1,
                   help="model replicas in the actor pool (default: 1)")
    g.add_argument("--num-cpus", type=float, default=None,
                   help="CPUs per replica (default: the cluster's CPUs shared among replicas)")
    g.add_argument("--num-gpus", type=float, default=0.0,
                   help="GPUs per replica (default: 0)")
    g.add_argument("--files-per-call", type=int, default=None,
                   help="files a replica takes at a time (default: --batch-size)")


def run(args, detector=None) -> int:
    """``transcribe.py --ray``: the whole corpus, resumably, into ``args.output_dir``; with a
    compliance ``detector``, its summary over the corpus in ``OUT/compliance.html|json``."""
    from engine.checkpoint import missing_files
    from engine.languages import resolve_language
    from engine.prompt import HotwordsError, check_hotwords
    from serving.model_choice import choose_model

    if not args.output_dir:
        print("error: --ray needs --output-dir (results.jsonl is written there)", file=sys.stderr)
        return 2
    if args.replicas < 1:
        print("error: --replicas must be at least 1", file=sys.stderr)
        return 2
    try:
        check_hotwords([w.strip() for w in args.hotwords.split(",") if w.strip()])
    except HotwordsError as e:
        print(f"error: --hotwords: {e}", file=sys.stderr)
        return 2
    try:
        resolve_language(args.language)
        inputs = expand_inputs(args.files)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not inputs:
        print("error: the inputs list no audio file", file=sys.stderr)
        return 2
    model_path, note = choose_model(args.model)
    if note and not args.quiet:
        logging.warning(note)
    if Path(model_path).is_dir() and missing_files(Path(model_path)):
        print(f"error: cannot load model {model_path}: missing "
              f"{', '.join(missing_files(Path(model_path)))}", file=sys.stderr)
        return 2

    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / RESULTS
    previous = load_results(results_path)
    keep = [r for r in previous.values() if not r.get("error")]
    if len(keep) != len(previous):      # failed files are tried again: drop their old lines
        rewrite_results(results_path, keep)
    done = {r["file"] for r in keep}
    files = [f for f, _ in inputs]
    keys = dict(inputs)
    todo = [f for f in files if f not in done]
    skipped = len(files) - len(todo)
    print(f"{len(files)} files: {skipped} already in {results_path}, {len(todo)} to transcribe",
          file=sys.stderr)
    if todo:
        try:
            _run_on_ray(args, model_path, todo, keys, results_path, out_dir)
        except _SetupError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    final = load_results(results_path)
    errors = [final[f] for f in files if f in final and final[f].get("error")]
    missing = [f for f in files if f not in final]
    for r in errors:
        print(f"error: {r['error']}", file=sys.stderr)
    if detector is not None:
        from compliance.corpus import summarize
        summarize(detector, [final[f] for f in files if f in final], out_dir, args)
    for f in missing:
        print(f"error: {f}: no result (the run ended before it)", file=sys.stderr)
    print(f"done: {len(files) - len(errors) - len(missing)} transcribed, {len(errors)} failed"
          + (f", {len(missing)} missing" if missing else "") + f"; results in {results_path}",
          file=sys.stderr)
    return 1 if errors or missing else 0


class _SetupError(RuntimeError):
    pass


def _run_on_ray(args, model_path: str, todo: list[str], keys: dict, results_path: Path,
                out_dir: Path) -> int:
    import ray
    from tqdm import tqdm

    started = time.perf_counter()
    root = str(Path(__file__).resolve().parents[1])
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    quiet_logs = logging.WARNING
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env={"env_vars": env}, logging_level=quiet_logs, log_to_driver=False)
    else:
        ray.init(runtime_env={"env_vars": env}, include_dashboard=False,
                 object_store_memory=512 * 1024 * 1024, logging_level=quiet_logs,
                 log_to_driver=False)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False          # ours below counts files, not blocks
        ctx.print_on_execution_start = False
        per_call = max(1, args.files_per_call or args.batch_size)
        cpus = ray.cluster_resources().get("CPU", 1)
        num_cpus = args.num_cpus if args.num_cpus is not None else (
            0 if args.num_gpus else max(1.0, float(int(cpus // args.replicas))))
        options = dict(language=args.language, itn=not args.no_itn,
                       hotwords=[w.strip() for w in args.hotwords.split(",") if w.strip()],
                       batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                       max_segment_s=args.max_segment_seconds,
                       speakers=getattr(args, "speaker_request", None),
                       words=words_wanted(args))
        calls = max(1, -(-len(todo) // per_call))
        replicas = min(args.replicas, calls)     # no replica without a file to take
        ds = ray.data.from_items([{"file": f, "key": keys[f]} for f in todo],
                                 override_num_blocks=calls)
        ds = ds.map_batches(CorpusWorker, batch_size=per_call, batch_format="default",
                            compute=ray.data.ActorPoolStrategy(size=replicas),
                            num_cpus=num_cpus, num_gpus=args.num_gpus or None,
                            fn_constructor_kwargs=dict(model_path=model_path, device=args.device,
                                                       dtype=args.dtype, options=options))
        failed = 0
        audio_s, t0 = 0.0, time.perf_counter()
        arrivals: list[tuple[float, float]] = []      # (time, audio seconds) per result
        bar = tqdm(total=len(todo), unit="file", disable=args.quiet, file=sys.stderr,
                   desc=f"{args.replicas} replica(s)")
        with open(results_path, "a", encoding="utf-8") as sink:
            for row in ds.iter_rows():
                r = json.loads(row["result"])
                arrivals.append((time.perf_counter(), float(r.get("duration") or 0.0)))
                key = r.pop("output_key", None) or Path(r["file"]).stem
                if r.get("error"):
                    failed += 1
                elif args.format != "json":
                    target = out_dir / f"{key}.{args.format}"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(render(r, args.format), encoding="utf-8")
                # one write per line, flushed: a kill leaves whole lines (and at most one cut)
                sink.write(render(r, "json") + "\n")
                sink.flush()
                audio_s += float(r.get("duration") or 0.0)
                bar.update(1)
                bar.set_postfix_str(f"{audio_s / 3600:.2f} h audio, "
                                    f"{audio_s / max(time.perf_counter() - t0, 1e-9):.1f}x real time")
        bar.close()
        wall = time.perf_counter() - started
        print(f"ray: {len(todo)} files, {audio_s:.1f} s of audio in {wall:.1f} s "
              f"({audio_s / max(wall, 1e-9):.1f}x real time){_steady(arrivals, started)}",
              file=sys.stderr)
        return failed
    except ray.exceptions.RayError as e:
        raise _SetupError(f"the Ray run failed: {_first_line(e)}") from e
    finally:
        ray.shutdown()


def _steady(arrivals: list[tuple[float, float]], started: float) -> str:
    """Throughput once running: the audio of the results that came after the first batch of
    results, over the time from that batch to the last result (start-up and loads excluded)."""
    if not arrivals:
        return ""
    first = arrivals[0][0]
    later = [(t, a) for t, a in arrivals if t - first > 0.2]   # a batch arrives within ms
    text = f"; first results after {first - started:.1f} s (cluster, replicas, model loads)"
    if later and later[-1][0] > first:
        audio = sum(a for _, a in later)
        text += (f"; after them {len(later)} files, {audio:.1f} s of audio in "
                 f"{later[-1][0] - first:.1f} s ({audio / (later[-1][0] - first):.1f}x real time)")
    return text


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__
