"""The scheduler (serving/scheduler.py) with the real tiny model and real clips, called from many
threads at once: every caller gets the texts its request gets alone; priorities and fairness
decide the order; bulk work steps aside for latency work; a failure stays with its input."""
from __future__ import annotations

import concurrent.futures
import threading
import time

import numpy as np
import pytest

from engine.audio import load_audio
from model import FunASRNano
from serving.metrics import Metrics
from serving.model_holder import ModelHolder
from serving.scheduler import BULK, Scheduler, SerialScheduler, make_scheduler

CLIPS = ["zh/funasr_sample.wav", "en/whisper_jfk.flac", "en/common_voice_en_651325.mp3",
         "zh/firered_BAC009S0764W0121.wav", "en/lhotse_ljspeech_LJ002-0020.wav",
         "zh/cosyvoice_zero_shot_prompt.wav", "en/wenet_librispeech_1995-1837-0001.wav",
         "en/lhotse_librispeech_2412-153948-0000.flac", "zh/wenet_aishell_BAC009S0724W0121.wav"]
OPTIONS = [dict(language="en", itn=True), dict(language=None, itn=False),
           dict(language="zh", itn=True, hotwords=["Qwen", "阿里巴巴"])]


@pytest.fixture(scope="module")
def asr(tiny_model_dir):
    return FunASRNano.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def waves(speech_dir):
    return [load_audio(str(speech_dir / c)) for c in CLIPS]


@pytest.fixture()
def scheduler(asr):
    s = Scheduler(asr, batch_size=4, metrics=Metrics())
    yield s
    s.close()


def _alone(asr, wave, opts, tokens):
    [r] = asr.transcribe([wave], max_new_tokens=tokens, **opts)
    return r["text"]


def test_concurrent_callers_get_the_texts_of_their_request_alone(asr, waves, scheduler):
    """12 requests of 1-3 clips from 12 threads, three prompt options and all three priorities,
    token limits 6-40: each result equals the engine's for that request alone (fp32)."""
    jobs = []
    for i in range(12):
        n = 1 + i % 3
        clips = [waves[(i + k) % len(waves)] for k in range(n)]
        priority = ("live", "interactive", "bulk")[i % 3]
        jobs.append((clips, OPTIONS[i % 3], 6 + (i * 7) % 35, priority))
    want = [[_alone(asr, w, opts, tokens) for w in clips] for clips, opts, tokens, _ in jobs]

    def run(job):
        clips, opts, tokens, priority = job
        return scheduler.transcribe(clips, max_new_tokens=tokens, priority=priority, **opts)

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        got = list(pool.map(run, jobs))
    for g, w, job in zip(got, want, jobs):
        assert [r["error"] for r in g] == [None] * len(w)
        assert [r["text"] for r in g] == w, job[1:]
        assert all(r["duration"] > 0 and r["finish_reason"] in ("stop", "length") for r in g)
    m = scheduler.metrics.registry
    steps = m.get_sample_value("funasr_nano_decode_steps_total")
    rows = m.get_sample_value("funasr_nano_decode_batch_size_sum")
    assert rows / steps > 1.5  # they really were decoded together
    assert m.get_sample_value("funasr_nano_sequences_total",
                              {"priority": "bulk", "outcome": "error"}) is None


def test_a_short_request_is_not_held_back_by_another_callers_many(asr, waves, scheduler):
    """Caller A sends 24 clips at once (interactive, then the same as bulk); caller B sends one
    clip just after: B's result comes back while most of A's are still waiting."""
    for priority in ("interactive", "bulk"):
        done_a = []
        many = [waves[i % len(waves)] for i in range(24)]

        def caller_a():
            # the thread is joined within this iteration: the loop variables are its own
            scheduler.transcribe(many, max_new_tokens=30, ignore_eos=True, priority=priority,  # noqa: B023
                                 caller="A")
            done_a.append(time.perf_counter())  # noqa: B023

        t = threading.Thread(target=caller_a)
        t.start()
        deadline = time.monotonic() + 30
        while scheduler.stats()["waiting"][priority] < 16 and time.monotonic() < deadline:
            time.sleep(0.005)  # A's clips are decoded in A's thread, then queued
        wait = scheduler.stats()["waiting"][priority]
        [b] = scheduler.transcribe([waves[1]], max_new_tokens=30, ignore_eos=True,
                                   priority=priority, caller="B")
        b_done = time.perf_counter()
        left = scheduler.stats()["waiting"][priority] + scheduler.stats()["running"][priority]
        t.join()
        assert b["error"] is None and b["num_tokens"] == 30
        assert wait > 8 and left > 8, (priority, wait, left)  # A's work was queued all along
        assert b_done < done_a[0]


def test_callers_that_send_together_share_one_prefill(asr, waves):
    """An idle scheduler lets the first newcomer wait ``gather_seconds`` for the others: four
    callers released together are prefilled in one call (here with a wide window, so thread
    start-up on a loaded machine cannot split them), and their texts are their texts alone."""
    metrics = Metrics()
    s = Scheduler(asr, batch_size=4, metrics=metrics, gather_seconds=0.5)
    try:
        barrier = threading.Barrier(4)

        def run(i):
            barrier.wait()
            return s.transcribe([waves[i]], max_new_tokens=12, language="en")

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            got = list(pool.map(run, range(4)))
        r = metrics.registry
        assert r.get_sample_value("funasr_nano_prefill_batch_size_count") == 1
        assert r.get_sample_value("funasr_nano_prefill_batch_size_sum") == 4
        assert [g[0]["text"] for g in got] == \
            [_alone(asr, waves[i], dict(language="en"), 12) for i in range(4)]
    finally:
        s.close()


def test_bulk_steps_aside_for_latency_work(asr, waves, scheduler, monkeypatch):
    """While an interactive sequence decodes, bulk sequences fill at most a quarter of each step
    (at least one), and no new bulk sequence is admitted; alone they fill the batch."""
    seen = []
    step = scheduler._step

    def spy(batch):
        seen.append(([w.rank for w in batch], [w.rank for w in scheduler._resident]))
        return step(batch)

    monkeypatch.setattr(scheduler, "_step", spy)
    bulk = threading.Thread(target=scheduler.transcribe, args=([waves[i % 9] for i in range(12)],),
                            kwargs=dict(max_new_tokens=60, ignore_eos=True, priority="bulk",
                                        caller="long"))
    bulk.start()
    while not any(BULK in ranks for ranks, _ in seen):
        time.sleep(0.01)
    time.sleep(0.05)
    [r] = scheduler.transcribe([waves[0]], max_new_tokens=20, ignore_eos=True,
                               priority="interactive", caller="short")
    bulk.join()
    assert r["num_tokens"] == 20
    with_latency = [(ranks, resident) for ranks, resident in seen if any(x != BULK for x in ranks)]
    assert len(with_latency) >= 19
    for ranks, resident in with_latency:
        assert 1 <= ranks.count(BULK) <= max(1, scheduler.batch_size // 4)
        assert resident.count(BULK) <= scheduler.batch_size
    alone = [ranks for ranks, _ in seen if all(x == BULK for x in ranks)]
    assert max(len(r) for r in alone) == scheduler.batch_size


def test_a_failing_input_fails_alone(asr, waves, scheduler, monkeypatch):
    """A prefill that raises (for one marked input) and a decode step that raises (for another)
    are retried one sequence at a time: those two inputs get an error naming them, their
    neighbours in the same batches get their texts, and the scheduler keeps serving."""
    poison = np.concatenate([waves[2], np.zeros(1234, np.float32)])  # a length nobody else has
    prepare = asr.prepare

    def flaky_prepare(batch, prompts):
        if any(len(w) == len(poison) for w in batch):
            raise RuntimeError("out of memory (injected)")
        return prepare(batch, prompts)

    monkeypatch.setattr(asr, "prepare", flaky_prepare)
    decoder = scheduler._decoder_or_new()
    step = decoder.step

    def flaky_step(seqs):
        if any(s.tag.key == "stepbad" for s in seqs):
            raise RuntimeError("step failed (injected)")
        return step(seqs)

    monkeypatch.setattr(decoder, "step", flaky_step)
    inputs = [waves[0], poison, waves[3], waves[4], waves[5]]
    keys = ["a", "poison", "b", "stepbad", "c"]
    [r] = scheduler.transcribe([waves[6]], max_new_tokens=8, keys=["warm"])  # before the fault
    results = scheduler.transcribe(inputs, max_new_tokens=12, keys=keys)
    errors = {r["key"]: r["error"] for r in results}
    assert errors["poison"].startswith("poison: decoding failed") and "injected" in errors["poison"]
    assert errors["stepbad"].startswith("stepbad: decoding failed")
    for wave, r in zip(inputs, results):
        if r["key"] in ("a", "b", "c"):
            assert r["error"] is None and r["text"] == _alone(asr, wave, {}, 12)
    monkeypatch.undo()
    [again] = scheduler.transcribe([waves[0]], max_new_tokens=12)
    assert again["text"] == _alone(asr, waves[0], {}, 12)


def test_bad_audio_and_bad_options_are_reported_to_their_caller(scheduler, asr, waves):
    out = scheduler.transcribe([b"not audio at all", waves[0]], max_new_tokens=4,
                               keys=["notes", "ok"])
    assert out[0]["error"].startswith("notes") and out[0]["text"] == ""
    # the good input beside it is transcribed as if alone
    assert out[1]["error"] is None and out[1]["key"] == "ok"
    assert out[1]["text"] == _alone(asr, waves[0], {}, 4)
    with pytest.raises(ValueError, match="unknown language"):
        scheduler.transcribe([waves[0]], language="Klingon")
    with pytest.raises(ValueError, match="priority"):
        scheduler.transcribe([waves[0]], priority="urgent")


def test_serial_mode_and_the_holder(asr, waves, tiny_model_dir):
    """--scheduler serial gives the same texts; the holder forces the token count with
    bench_tokens and hands models without the batching interface to the serial path."""
    serial = make_scheduler(asr, "serial", 4)
    assert isinstance(serial, SerialScheduler)
    got = serial.transcribe(waves[:3], max_new_tokens=10, **OPTIONS[0])
    assert [r["text"] for r in got] == [_alone(asr, w, OPTIONS[0], 10) for w in waves[:3]]
    holder = ModelHolder("tiny", "cpu", "fp32", loader=lambda *a: asr, bench_tokens=17)
    try:
        r = holder.client("bulk", "me").transcribe([waves[0], waves[1]])
        assert [x["num_tokens"] for x in r] == [17, 17]
        assert holder.scheduler_stats()["mode"] == "batch"
    finally:
        holder.close()

    class OnlyTranscribe:
        def transcribe(self, inputs, **kw):
            return [{"text": "x", "duration": 1.0} for _ in inputs]

    assert isinstance(make_scheduler(OnlyTranscribe()), SerialScheduler)


def test_close_fails_what_is_left_and_refuses_more(asr, waves):
    s = Scheduler(asr, batch_size=2)
    out = []
    t = threading.Thread(target=lambda: out.append(
        s.transcribe([waves[i % 9] for i in range(10)], max_new_tokens=200, ignore_eos=True)))
    t.start()
    time.sleep(0.3)
    s.close()
    t.join(10)
    assert not t.is_alive()
    errors = [r["error"] for r in out[0]]
    assert any(e and "shutting down" in e for e in errors)
    with pytest.raises(RuntimeError, match="closed"):
        s.transcribe([waves[0]])


def test_replace_model_waits_for_the_sequences_in_flight(asr, waves, tiny_model_dir):
    """The holder's switch onto the CPU kernels: a new copy handed over while sequences decode
    takes over once they are done; everyone's texts stay those of the engine alone."""
    s = Scheduler(asr, batch_size=4)
    other = FunASRNano.from_pretrained(str(tiny_model_dir), device="cpu", dtype="fp32")
    try:
        out = []
        t = threading.Thread(target=lambda: out.append(
            s.transcribe(waves[:4], max_new_tokens=40, ignore_eos=True)))
        t.start()
        while not s.stats()["running"]["interactive"]:
            time.sleep(0.005)
        s.replace_model(other)
        assert s.model is asr  # not while those decode
        late = s.transcribe(waves[4:6], max_new_tokens=12)
        t.join()
        assert s.model is other
        assert [r["num_tokens"] for r in out[0]] == [40] * 4
        assert [r["text"] for r in late] == [_alone(asr, w, {}, 12) for w in waves[4:6]]
    finally:
        s.close()


def test_the_scheduler_drives_the_static_decoder_with_the_same_texts(asr, waves, monkeypatch):
    """The CUDA path's decoder (engine.cuda_decoding, run eagerly here) behind the scheduler:
    concurrent callers with different options and repetition guards get the dynamic loop's
    texts, so the scheduler needs nothing else on a GPU."""
    jobs = [([waves[i % len(waves)], waves[(i + 3) % len(waves)]], OPTIONS[i % 3], 8 + 5 * i,
             i % 2 == 0) for i in range(6)]
    want = [[asr.transcribe([w], max_new_tokens=t, repetition_guard=g, **o)[0]["text"]
             for w in clips] for clips, o, t, g in jobs]
    monkeypatch.setattr(asr, "decoder", "static")
    s = Scheduler(asr, batch_size=4, metrics=Metrics())
    try:
        assert type(s.model.new_decoder(4)).__name__ == "StaticBatchDecoder"
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            got = list(pool.map(lambda j: s.transcribe(j[0], max_new_tokens=j[2],
                                                       repetition_guard=j[3], **j[1]), jobs))
    finally:
        s.close()
    assert [[r["text"] for r in g] for g in got] == want


def test_memory_goes_back_once_idle_after_work(asr, waves, monkeypatch):
    """idle_release_seconds without work after some: the allocator's kept memory is given back,
    once (engine/allocator.release_idle_memory, whose effect test_allocator.py measures); not
    again while nothing runs, and again after the next work."""
    import serving.scheduler as sched
    calls = []
    monkeypatch.setattr(sched, "release_idle_memory", lambda: calls.append(time.monotonic()))
    s = Scheduler(asr, batch_size=2, idle_release_seconds=0.3)

    def wait_for(n):
        deadline = time.monotonic() + 30
        while len(calls) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(calls) == n, calls
    try:
        assert s.transcribe([waves[0]], max_new_tokens=8)[0]["error"] is None
        wait_for(1)
        time.sleep(1.0)                         # idle, nothing new done: no second release
        assert len(calls) == 1, calls
        s.transcribe([waves[1]], max_new_tokens=8)
        wait_for(2)
    finally:
        s.close()
    never = Scheduler(asr, batch_size=2, idle_release_seconds=None)
    try:
        never.transcribe([waves[0]], max_new_tokens=8)
        time.sleep(0.6)
        assert len(calls) == 2, calls
    finally:
        never.close()
