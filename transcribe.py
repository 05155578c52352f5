#!/usr/bin/env python3
"""Batch transcription from the command line.

    python transcribe.py [--model DIR_OR_HUB_ID] [--device cpu|cuda] [--dtype fp32|bf16|int8]
        [--language L] [--no-itn] [--hotwords a,b] [--batch-size N] [--max-new-tokens N]
        [--max-segment-seconds S] [--format json|txt|srt|vtt|tsv|rttm] [--word-timestamps]
        [--output-dir DIR] [--speakers auto|N|MIN-MAX] [--speaker-names NAME=CLIP,...]
        [--speaker-model FILE.onnx] [--watch FILE] [--pii] [--redact]
        [--redact-audio silence|bleep] [--report PATH] [--quiet] FILE...

Every file gets a result (one JSON line each with --format json); the exit status is 1 when any
file failed, 0 otherwise. With no --language, each result says the language heard (language,
language_name, language_probability; per segment for long files). Several files in srt or vtt
need --output-dir (one subtitle file per recording). Files longer than --max-segment-seconds are
cut at pauses by the voice activity detector and decoded segment by segment. With --speakers,
each file is diarized first and its speaker turns are transcribed: segments carry "speaker" (A,
B, ... in order of first speech, or the names of --speaker-names), SRT/VTT/TSV show it, --format
rttm writes the turns (see docs/speakers.md).

    python transcribe.py --ray --output-dir OUT [--replicas N] INPUT...   # a corpus on Ray Data

With --ray, INPUT may also be directories, globs and .tsv/.jsonl manifests; results go to
OUT/results.jsonl, and a rerun skips the files already there (see serving/corpus.py).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from compliance import cli as compliance_cli
from engine.audio import vad
from serving import corpus


SUBTITLES = ("srt", "vtt")   # formats that hold one recording each


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: "--lang en" is an error, not silently "--language en"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, mp3, ogg, "
                   "opus, m4a, webm, ...)")
    p.add_argument("--model", default=None, help="model directory or hub id (default: "
                   "$FUNASR_NANO_MODEL, else the official model if present locally, else the "
                   "bundled demo)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when "
                   "available, else cpu)")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "int8"],
                   help="fp32 = faithful to the reference; bf16 = GPU arithmetic; int8 = CPU, "
                   "fastest, lossy (default: bf16 on GPUs of compute capability 8.0+, fp32 on "
                   "older GPUs and CPU)")
    p.add_argument("--language", default="auto", help="ISO code, English or native name, or "
                   "auto: the model is not told one (default: auto)")
    p.add_argument("--no-itn", action="store_true", help="spoken form: numbers as words, no "
                   "symbols (default: ITN on: digits, punctuation, casing)")
    p.add_argument("--hotwords", default="", help="comma-separated names or terms to favour "
                   "(default: none)")
    p.add_argument("--batch-size", type=int, default=8, help="files, or segments of a long "
                   "file, decoded per model call (default: 8)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="token limit per utterance "
                   "or segment (default: 512)")
    p.add_argument("--max-segment-seconds", type=float, default=30.0,
                   help="files longer than this are cut at pauses into segments of at most "
                   f"this many seconds; speech separated by pauses under {vad.MERGE_GAP_S:g} s "
                   f"is merged into segments of up to {vad.TARGET_SEGMENT_S:g} s (or this, if "
                   f"shorter), each padded by {vad.PAD_S:g} s (default: 30)")
    p.add_argument("--format", default="json", choices=["json", "txt", "srt", "vtt", "tsv",
                                                        "rttm"],
                   help="json: one line per file with text, language, segments, error; txt: "
                   "the text; srt, vtt: subtitles; tsv: start, end, text; rttm: the speaker "
                   "turns (needs --speakers) (default: json)")
    p.add_argument("--speakers", default=None, metavar="auto|N|MIN-MAX",
                   help="label who speaks: auto (count estimated), N speakers, or MIN-MAX "
                   "(default: no speakers)")
    p.add_argument("--speaker-names", default="", metavar="NAME=CLIP,...",
                   help="known speakers: a 2-10 s clip of each voice alone; those voices get "
                   "the name, others letters (implies --speakers auto)")
    p.add_argument("--speaker-model", default=None, metavar="FILE.onnx",
                   help="a WeSpeaker / CAM++ style ONNX speaker embedding model to use instead "
                   "of the packaged GE2E encoder")
    p.add_argument("--word-timestamps", action="store_true",
                   help="add word times (words: word, start, end) to the JSON; always on for "
                   "srt, vtt and tsv, whose cues and rows start and end at words (docs/timing.md)")
    p.add_argument("--output-dir", default=None, help="write one FILE.<format> per input "
                   "here instead of printing to stdout (default: print; srt and vtt print "
                   "only one file: several need this)")
    p.add_argument("--quiet", action="store_true", help="no progress, no log lines, no "
                   "demo-model notice: only warnings and errors on stderr (and one line while "
                   "the CPU kernels compile, once per machine)")
    compliance_cli.add_arguments(p)
    corpus.add_arguments(p)
    return p


def speaker_request(args):
    """--speakers / --speaker-names / --speaker-model -> SpeakerRequest, or None; ValueError
    (the message names the flag) for a bad value, a missing clip or model."""
    if args.format == "rttm" and args.speakers is None and not args.speaker_names:
        raise ValueError("--format rttm writes speaker turns: add --speakers auto|N|MIN-MAX")
    if args.speakers is None and not args.speaker_names:
        return None
    from engine.audio import AudioError, load_audio
    from engine.speakers.diarize import reference_embedding
    from engine.speakers.models import ModelMissing, get_embedding
    from engine.speakers.options import (REFERENCE_MAX_S, SpeakerRequest, known_speakers,
                                         parse_count)
    num, lo, hi = parse_count(args.speakers, "--speakers")
    model = args.speaker_model
    if model:
        try:
            get_embedding(model)
        except ModelMissing as e:
            raise ValueError(f"--speaker-model: {e}") from None
    names, clips = [], []
    for pair in filter(None, (x.strip() for x in args.speaker_names.split(","))):
        name, sep, path = pair.partition("=")
        if not sep or not path.strip():
            raise ValueError(f"--speaker-names: '{pair}' is not NAME=CLIP")
        try:
            clips.append(load_audio(path.strip(), max_seconds=REFERENCE_MAX_S + 0.5))
        except AudioError as e:
            raise ValueError(f"--speaker-names: {e}") from None
        names.append(name)
    known = known_speakers(names, clips, lambda a: reference_embedding(a, model),
                           "--speaker-names", "--speaker-names")
    return SpeakerRequest(num, lo, hi, known, model)


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(message)s", stream=sys.stderr)
    if args.quiet:
        import warnings
        warnings.simplefilter("ignore")   # library warnings are noise to a script's user
    detector = compliance_cli.make_detector(args)
    try:
        args.speaker_request = speaker_request(args)
    except ValueError as e:      # SpeakerError, a missing clip or model file: names the flag
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.ray:
        return corpus.run(args, detector)
    if args.format in SUBTITLES and len(args.files) > 1 and not args.output_dir:
        # a subtitle file belongs to one recording: glued documents are no valid SRT/VTT
        print(f"error: --format {args.format} writes one subtitle file per recording; with "
              f"{len(args.files)} files give --output-dir DIR (one FILE.{args.format} each), "
              f"or transcribe one file at a time", file=sys.stderr)
        return 2
    from engine.languages import resolve_language
    from model import FunASRNano
    from serving.model_choice import choose_model

    try:
        resolve_language(args.language)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    hotwords = [w.strip() for w in args.hotwords.split(",") if w.strip()]
    from engine.prompt import HotwordsError, check_hotwords
    try:
        check_hotwords(hotwords)
    except HotwordsError as e:
        print(f"error: --hotwords: {e}", file=sys.stderr)
        return 2
    model_path, note = choose_model(args.model)
    if note and not args.quiet:   # the demo-model notice: a fact, not a warning
        logging.warning(note)
    if args.quiet and (args.device or "cpu") == "cpu":   # without --quiet the log says it
        from engine.kernels import state
        if state()["state"] == "not_built":  # a minute of silence otherwise
            print("compiling CPU kernels (once) ...", file=sys.stderr, flush=True)
    try:
        asr = FunASRNano.from_pretrained(model_path, device=args.device, dtype=args.dtype)
    except Exception as e:  # noqa: BLE001 - a clear message, not a traceback
        print(f"error: cannot load model {model_path}: {e}", file=sys.stderr)
        return 2
    try:
        asr.check_hotwords(hotwords)
    except HotwordsError as e:
        print(f"error: --hotwords: {e}", file=sys.stderr)
        return 2
    info = asr.describe()
    hotwords = compliance_cli.hotwords(detector, hotwords, asr)   # watch terms, within the caps
    logging.info("model %s on %s (%s)", info["model"], info["device"], info["dtype"])

    def progress(done, total):
        if not args.quiet:
            print(f"{done}/{total} files", file=sys.stderr)

    outputs = corpus.transcribe_files(
        asr, args.files, language=args.language, itn=not args.no_itn, hotwords=hotwords,
        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
        max_segment_s=args.max_segment_seconds, progress=progress, quiet=args.quiet,
        speakers=args.speaker_request, words=corpus.words_wanted(args))
    outputs = compliance_cli.apply(detector, outputs, args.files, args)
    results = dict(enumerate(outputs))

    failed = 0
    for i, f in enumerate(args.files):
        r = results[i]
        if r.get("error"):
            failed += 1
            print(f"error: {r['error']}", file=sys.stderr)
        text = corpus.render(r, args.format)
        if args.output_dir and not r.get("error"):
            out = Path(args.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{Path(f).stem}.{args.format}").write_text(text, encoding="utf-8")
        elif args.format == "json" or not r.get("error"):
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
