"""Decode any audio input to 16 kHz mono float32 in [-1, 1].

Decoders: libsndfile (``soundfile``: wav, flac, mp3, ogg/vorbis, ogg/opus) first, because the
reference (funasr without torchaudio) reads with ``soundfile``; PyAV (its own bundled FFmpeg, no
``ffmpeg`` CLI needed) for everything libsndfile cannot open (m4a/aac, webm, ...) or when it fails.
Channels are averaged. Resampling is ``soxr`` quality HQ followed by librosa's length fix, which
is exactly what ``librosa.resample`` (default ``res_type="soxr_hq"``, ``fix=True``) does, and that
is the reference's resampler when torchaudio is absent.

Damaged files: by default a truncated or corrupt file is an ``AudioError`` naming what is wrong,
because silently transcribing half a recording misleads; ``allow_damaged=True`` instead returns
the audio that could be decoded, with a logged warning. libsndfile and FFmpeg differ here:
libsndfile's mp3 decoder silently stops at a damaged frame and its flac decoder gives up on a
truncated file, whereas FFmpeg skips the bad packet and goes on. So when libsndfile fails, or
returns clearly fewer frames than its header announced, the rest is decoded with PyAV. An MP3
has no reliable length header, so its truncation is found by walking its frame headers.

Limits: a header may lie about the length, or say nothing (a FLAC may leave it unset, Ogg and
MP3 streams have none), so ``max_seconds`` is a running budget checked while decoding: the
decoders stop as soon as the audio decoded so far passes it (``AudioTooLong``), whatever the
container claims. Blocks are capped in samples as well as in seconds, so a header claiming a huge
rate or channel count cannot make one read allocate more than ``_MAX_BLOCK_SAMPLES`` floats.
"""

from __future__ import annotations

import io
import logging
import os
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

log = logging.getLogger(__name__)

from engine import SAMPLE_RATE  # noqa: E402
_NATIVE_BLOCK_S = 30.0       # decode granularity for files; bounds memory when streaming
_MAX_BLOCK_SAMPLES = 1 << 22  # ... and at most this many samples (all channels) per block: 16 MB
_MAX_BAD_PACKETS = 1000      # give up on a file that is mostly garbage
MIN_RATE, MAX_RATE = 1000, 768000   # sample rates outside this are header damage, not audio


class AudioError(ValueError):
    """The input could not be turned into audio. ``str()`` is "<input name>: <reason>".

    ``AudioError(name, reason)``; ``AudioError(message)`` with a ready message also works."""

    def __init__(self, name: str, reason: str | None = None):
        self.name, self.reason = (name, reason) if reason is not None else (None, name)
        super().__init__(f"{name}: {reason}" if reason is not None else name)


class AudioTooLong(AudioError):
    """Decoding passed the caller's ``max_seconds``; ``limit_seconds`` is that budget."""

    def __init__(self, name: str, limit_seconds: float):
        self.limit_seconds = limit_seconds
        super().__init__(name, f"audio is longer than {_minutes(limit_seconds)}, the most "
                         "accepted here (decoding stopped there)")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


# --------------------------------------------------------------------------- resampling

def resample(audio: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """``librosa.resample(audio, orig_sr=orig_sr, target_sr=target_sr)`` bit for bit, without
    importing librosa (soxr HQ, then the length fixed to ceil(n * ratio))."""
    audio = np.asarray(audio, dtype=np.float32)
    if orig_sr == target_sr:
        return audio
    out = soxr.resample(audio, orig_sr, target_sr, quality="HQ")
    return _fix_length(out, _resampled_length(len(audio), orig_sr, target_sr))


def _resampled_length(n: int, orig_sr: int, target_sr: int) -> int:
    # Same float expression as librosa, so rounding agrees with it.
    return int(np.ceil(n * (float(target_sr) / orig_sr)))


def _fix_length(x: np.ndarray, n: int) -> np.ndarray:
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.zeros(n - len(x), dtype=x.dtype)])


# --------------------------------------------------------------------------- arrays

def _to_mono_float(arr: np.ndarray, name: str) -> np.ndarray:
    """Array of samples (any int/float dtype, 1-D or 2-D) -> mono float32 in [-1, 1]."""
    if arr.dtype.kind in "iu":
        info = np.iinfo(arr.dtype)
        half = (int(info.max) + 1) / 2 if arr.dtype.kind == "u" else None
        arr = arr.astype(np.float64)
        # Same scaling as libsndfile/torchaudio: int16 / 32768, uint8 (x - 128) / 128.
        arr = (arr - half) / half if half else arr / -float(info.min)
    elif arr.dtype.kind != "f":
        raise AudioError(name, f"unsupported sample type {arr.dtype}")
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 2:
        # (channels, samples) from torch or (samples, channels) from soundfile: the shorter
        # axis is the channel axis. Channels are averaged, as the reference does.
        arr = arr.mean(axis=0 if arr.shape[0] <= arr.shape[1] else 1, dtype=np.float32)
    elif arr.ndim != 1:
        raise AudioError(name, f"expected 1-D or 2-D audio, got shape {arr.shape}")
    if arr.size == 0:
        raise AudioError(name, "no audio samples")
    if not np.isfinite(arr).all():
        raise AudioError(name, "audio contains NaN or infinite samples")
    return arr


def _as_array(x) -> np.ndarray | None:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach") and hasattr(x, "numpy"):   # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.float()   # bf16/fp16 have no numpy dtype
        return x.numpy()
    return None


def _array_input(src, sr: int, name: str | None) -> np.ndarray | None:
    """Handle in-memory inputs; None if ``src`` is not one."""
    if isinstance(src, tuple) and len(src) == 2:
        arr, rate = _as_array(src[0]), src[1]
        if arr is not None:
            name = name or "<array>"
            try:
                rate = float(rate)
            except (TypeError, ValueError):
                raise AudioError(name, f"invalid sample rate {src[1]!r}") from None
            if not rate > 0 or rate != int(rate):
                raise AudioError(name, f"invalid sample rate {src[1]!r}")
            return resample(_to_mono_float(arr, name), int(rate), sr)
    arr = _as_array(src)
    if arr is not None:
        return _to_mono_float(arr, name or "<array>")   # assumed already at `sr`
    return None


# --------------------------------------------------------------------------- byte sources

def _source(src, name: str | None):
    """Validate a path / bytes / file object; return (decoder input, display name)."""
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        name = name or path
        if path.startswith(("http://", "https://")):
            raise AudioError(name, "URLs are not fetched; download the file first")
        if not os.path.exists(path):
            raise AudioError(name, "file not found")
        if os.path.isdir(path):
            raise AudioError(name, "is a directory, not an audio file")
        if not os.access(path, os.R_OK):
            raise AudioError(name, "permission denied")
        if os.path.getsize(path) == 0:
            raise AudioError(name, "empty file (0 bytes)")
        return path, name
    if isinstance(src, (bytes, bytearray, memoryview)):
        name = name or "<bytes>"
        if len(src) == 0:
            raise AudioError(name, "empty input (0 bytes)")
        return io.BytesIO(bytes(src)), name
    if hasattr(src, "read"):
        name = name or str(getattr(src, "name", "") or "<file object>")
        if isinstance(src, io.TextIOBase):
            raise AudioError(name, "file object is open in text mode; open it with 'rb'")
        if not (hasattr(src, "seek") and _seekable(src)):
            src = io.BytesIO(src.read())   # both decoders need to seek
        src.seek(0, io.SEEK_END)
        if src.tell() == 0:
            raise AudioError(name, "empty file (0 bytes)")
        src.seek(0)   # like the reference: a file object is read from its start
        return src, name
    raise AudioError(name or "<input>", f"unsupported input type {type(src).__name__}")


def _seekable(f) -> bool:
    try:
        return bool(f.seekable()) if hasattr(f, "seekable") else True
    except (OSError, ValueError):
        return False


def _rewind(source) -> None:
    if hasattr(source, "seek"):
        source.seek(0)


def _head(source, n: int = 64) -> bytes:
    if isinstance(source, str):
        with open(source, "rb") as f:
            return f.read(n)
    source.seek(0)
    head = source.read(n)
    source.seek(0)
    return head if isinstance(head, bytes) else b""


_MAGIC = [  # (offset, bytes, format name) - only used to word error messages
    (0, b"RIFF", "WAV"), (0, b"RF64", "WAV"), (0, b"fLaC", "FLAC"), (0, b"OggS", "Ogg"),
    (0, b"ID3", "MP3"), (4, b"ftyp", "MP4/M4A"), (0, b"\x1aE\xdf\xa3", "WebM/Matroska"),
    (0, b"FORM", "AIFF"), (0, b"caff", "CAF"), (0, b"#!AMR", "AMR"),
]


def _undecodable_reason(source) -> str:
    head = _head(source)
    for off, magic, fmt in _MAGIC:
        if head[off:off + len(magic)] == magic:
            return f"truncated or corrupt {fmt} file"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "truncated or corrupt MP3 file"
    if all(b >= 0x20 and b != 0x7F or b in b"\t\n\r\f" for b in head):
        return "not an audio file (it contains text)"
    return "not an audio file, or an unsupported format"


def _damaged(name: str, message: str, strict: bool) -> None:
    if strict:
        raise AudioError(name, message)
    log.warning("%s: %s", name, message)


_MP3_KBPS = {  # (MPEG-1?, layer) -> bitrate table in kbit/s, index 1..14
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_KBPS[(False, 3)] = _MP3_KBPS[(False, 2)]
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frame_length(h: bytes) -> int:
    """Bytes in the MPEG audio frame whose 4-byte header is ``h``; 0 if it is no valid header."""
    if len(h) < 4 or h[0] != 0xFF or h[1] & 0xE0 != 0xE0:
        return 0
    version, layer_bits = (h[1] >> 3) & 3, (h[1] >> 1) & 3
    rate_i, kbps_i, padding = (h[2] >> 2) & 3, h[2] >> 4, (h[2] >> 1) & 1
    if version == 1 or layer_bits == 0 or rate_i == 3 or kbps_i in (0, 15):
        return 0
    layer, mpeg1 = 4 - layer_bits, version == 3
    bitrate = _MP3_KBPS[(mpeg1, layer)][kbps_i - 1] * 1000
    rate = _MP3_RATES[version][rate_i]
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4
    return (144 if mpeg1 or layer == 2 else 72) * bitrate // rate + padding


def _mp3_truncated(source) -> bool:
    """True when an MP3's last frame runs past the end of the data (a cut-off download)."""
    if isinstance(source, str):
        with open(source, "rb") as f:
            data = f.read()
    else:
        source.seek(0)
        data = source.read()
        source.seek(0)
    pos = 0
    if data[:3] == b"ID3" and len(data) >= 10:  # skip an ID3v2 tag (syncsafe size)
        pos = 10 + ((data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7
                    | (data[9] & 0x7F)) + (10 if data[5] & 0x10 else 0)
    while pos < len(data) and not _mp3_frame_length(data[pos:pos + 4]):
        pos += 1  # to the first frame
        if pos > 65536:
            return False
    frames = 0
    while pos < len(data):
        n = _mp3_frame_length(data[pos:pos + 4])
        if not n:  # a trailing tag or junk, not a cut frame; a cut header is a truncation
            return len(data) - pos < 4 and data[pos:pos + 1] == b"\xff" and frames > 0
        if pos + n > len(data):
            return True
        pos, frames = pos + n, frames + 1
    return False


def _is_mp3(source) -> bool:
    head = _head(source, 4)
    return head[:3] == b"ID3" or bool(_mp3_frame_length(head))


# --------------------------------------------------------------------------- decoding

def _native_blocks(source, name: str, strict: bool = True) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (mono float32 block, sample rate) at the file's own rate, libsndfile first."""
    done, rate = 0, None
    try:
        f = sf.SoundFile(source)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        f = None   # not a format libsndfile knows (m4a, webm, ...) or unreadable: try PyAV
    if f is not None:
        with f:
            rate, expected = f.samplerate, f.frames
            if not 0 < expected < 2**62:
                expected = None   # libsndfile's "unknown" (a FLAC may leave its length unset)
            _check_rate(rate, name)
            try:
                if f.seekable():
                    # As sf.read() does. Without this seek libsndfile 1.2.2 keeps the Opus
                    # pre-skip of some Ogg Opus files (FFmpeg-written, 48 kHz): audio 6.5 ms
                    # late. On a damaged file it may fail: then PyAV decodes it.
                    f.seek(0)
                # Not f.blocks(): after a short read (a damaged mp3) it yields stale buffer data.
                n = _block_samples(rate, f.channels)
                while len(block := f.read(n, dtype="float32", always_2d=True)):
                    yield block.mean(axis=1, dtype=np.float32), rate
                    done += len(block)
                # mp3 frame counts are estimates: only a clear shortfall means damage.
                if expected is None or done >= expected - max(0.01 * expected, 0.1 * rate):
                    if done == 0:
                        raise AudioError(name, "no audio samples")
                    if _is_mp3(source) and _mp3_truncated(source):
                        _damaged(name, f"truncated MP3 file: the data ends inside a frame "
                                 f"(only {done / rate:.2f} s decoded)", strict)
                    return
            except sf.LibsndfileError as e:
                log.debug("%s: libsndfile stopped after %d frames: %s", name, done, e)
    _rewind(source)
    got = 0
    for block, av_rate in _pyav_blocks(source, name, skip=done, need_rate=rate if done else None,
                                       strict=strict):
        got += len(block)
        yield block, av_rate
    if done:
        mp3 = _is_mp3(source)
        if mp3 and got == 0 and not _mp3_truncated(source):
            return  # an intact VBR mp3 whose frame count libsndfile over-estimated
        if expected is None:
            return  # no length to fall short of (PyAV reports damaged packets itself)
        _damaged(name, f"{'truncated MP3 file' if mp3 else 'truncated or corrupt file'}: "
                 f"decoded {(done + got) / rate:.2f} s of the {expected / rate:.2f} s announced",
                 strict)


def _pyav_blocks(source, name: str, skip: int = 0, need_rate: int | None = None,
                 strict: bool = True):
    """PyAV decode, skipping damaged packets. ``skip`` samples are dropped from the start (to
    continue where libsndfile stopped, at libsndfile's rate ``need_rate``)."""
    import av   # imported lazily: most inputs never need it

    try:
        container = av.open(source, metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError) as e:
        if skip:
            return   # libsndfile already gave us audio; keep what we have
        raise AudioError(name, _undecodable_reason(source)) from e
    with container:
        if not container.streams.audio:
            if skip:
                return
            raise AudioError(name, "contains no audio stream")
        stream = container.streams.audio[0]
        announced = container.duration / av.time_base if container.duration else None
        pending, n_pending, total, bad, rate = [], 0, 0, 0, need_rate
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    bad += 1   # a damaged packet: skip it like the ffmpeg CLI does
                    if bad > _MAX_BAD_PACKETS:
                        break
                    continue
                for frame in frames:
                    rate = rate or _check_rate(frame.sample_rate, name)
                    mono = _frame_to_mono(frame)
                    if frame.sample_rate != rate:
                        # A rate change mid-stream (joined files, or garbage that parsed as a
                        # frame header): bring it to the stream's rate, as the ffmpeg CLI would.
                        mono = soxr.resample(mono, frame.sample_rate, rate, quality="HQ")
                    if skip >= len(mono):
                        skip -= len(mono)
                        continue
                    mono, skip = mono[skip:], 0
                    pending.append(mono)
                    n_pending += len(mono)
                    if n_pending >= _block_samples(rate):
                        yield np.concatenate(pending), rate
                        total += n_pending
                        pending, n_pending = [], 0
        except av.error.FFmpegError as e:   # container-level damage: stop at what we have
            bad += 1
            log.debug("%s: demux error: %s", name, e)
        if pending:
            yield np.concatenate(pending), rate
            total += n_pending
    if total == 0 and need_rate is None:
        raise AudioError(name, "truncated or corrupt: no audio could be decoded" if bad
                         else "no audio samples")
    if bad:
        _damaged(name, f"corrupt file: {bad} damaged packet(s) skipped", strict)
    elif announced and need_rate is None and total / rate < 0.95 * announced - 0.1:
        _damaged(name, f"truncated file: decoded {total / rate:.2f} s of the {announced:.2f} s "
                 "the header announces", strict)


def _check_rate(rate: int, name: str) -> int:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(name, f"unsupported sample rate {rate} Hz (damaged header?)")
    return rate


def _block_samples(rate: int, channels: int = 1) -> int:
    """Frames per decoded block: ``_NATIVE_BLOCK_S`` of audio, capped in samples."""
    return max(1, min(int(_NATIVE_BLOCK_S * rate), _MAX_BLOCK_SAMPLES // max(1, channels)))


def _checked_blocks(source, name: str, strict: bool, max_seconds: float | None
                    ) -> Iterator[tuple[np.ndarray, int]]:
    """``_native_blocks`` with the running length budget and the finiteness check applied
    to every block before anyone sees it."""
    n, rate0 = 0, None
    for block, rate in _native_blocks(source, name, strict):
        if not np.isfinite(block).all():
            raise AudioError(name, "audio contains NaN or infinite samples")
        n += len(block)
        rate0 = rate0 or rate
        if max_seconds is not None and n / rate0 > max_seconds:
            raise AudioTooLong(name, max_seconds)
        yield block, rate


_INT_SCALE = {"s16": 32768.0, "s32": 2147483648.0, "s64": 9.223372036854775808e18}


def _frame_to_mono(frame) -> np.ndarray:
    a = frame.to_ndarray()
    channels = frame.layout.nb_channels
    if not frame.format.is_planar:
        a = a.reshape(-1, channels).T       # packed: (1, n*C) interleaved
    fmt = frame.format.name.rstrip("p")
    if fmt == "u8":
        a = (a.astype(np.float32) - 128.0) / 128.0
    elif fmt in _INT_SCALE:
        a = (a.astype(np.float64) / _INT_SCALE[fmt]).astype(np.float32)
    return a.mean(axis=0, dtype=np.float32) if channels > 1 else a[0].astype(np.float32, copy=False)


# --------------------------------------------------------------------------- public API

def load_audio(src, sr: int = SAMPLE_RATE, name: str | None = None,
               allow_damaged: bool = False, max_seconds: float | None = None) -> np.ndarray:
    """Decode ``src`` to mono float32 at ``sr`` Hz.

    ``src``: a path (str/Path), bytes, a binary file object, an ``(array, sample_rate)`` tuple, or
    a 1-D/2-D numpy array / torch tensor already at ``sr`` (2-D: the shorter axis is channels).
    Integer arrays are scaled (int16 / 32768 etc.). Raises ``AudioError`` naming ``name`` (or the
    path) and the reason; a truncated or corrupt file too, unless ``allow_damaged``; and
    ``AudioTooLong`` as soon as more than ``max_seconds`` have been decoded.
    """
    arr = _array_input(src, sr, name)
    if arr is not None:
        if max_seconds is not None and len(arr) / sr > max_seconds:
            raise AudioTooLong(name or "<array>", max_seconds)
        return arr
    source, name = _source(src, name)
    blocks, rate = [], None
    for block, rate in _checked_blocks(source, name, not allow_damaged, max_seconds):
        blocks.append(block)
    audio = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    return resample(audio, rate, sr)


def stream_audio(src, block_seconds: float = 30.0, sr: int = SAMPLE_RATE,
                 name: str | None = None, allow_damaged: bool = False,
                 max_seconds: float | None = None) -> Iterator[np.ndarray]:
    """Yield consecutive mono float32 blocks at ``sr`` Hz, each ``block_seconds`` long (the last
    may be shorter), without holding the whole file in memory; ``AudioTooLong`` as soon as more
    than ``max_seconds`` have been decoded.

    The concatenation equals ``load_audio(src, sr)`` exactly: soxr's streaming resampler gives
    the same samples as the one-shot call, and the final length is fixed the same way.
    """
    block = max(1, int(round(block_seconds * sr)))
    arr = _array_input(src, sr, name)
    if arr is not None:
        if max_seconds is not None and len(arr) / sr > max_seconds:
            raise AudioTooLong(name or "<array>", max_seconds)
        for i in range(0, len(arr), block):
            yield arr[i:i + block]
        return
    source, name = _source(src, name)
    out = _Rechunker(block)
    resampler, rate, n_in = None, None, 0
    for chunk, rate in _checked_blocks(source, name, not allow_damaged, max_seconds):
        if resampler is None and rate != sr:
            resampler = soxr.ResampleStream(rate, sr, 1, dtype="float32", quality="HQ")
        n_in += len(chunk)
        yield from out.push(resampler.resample_chunk(chunk) if resampler else chunk)
    if resampler is not None:
        yield from out.push(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    yield from out.finish(_resampled_length(n_in, rate, sr) if rate != sr else n_in)


class _Rechunker:
    """Re-cut a stream of arrays into fixed-size blocks; pad/trim the total at the end."""

    def __init__(self, block: int):
        self.block, self.parts, self.n, self.emitted = block, [], 0, 0

    def push(self, x: np.ndarray):
        if len(x):
            self.parts.append(x)
            self.n += len(x)
        while self.n >= self.block:
            buf = np.concatenate(self.parts)
            yield buf[:self.block]
            self.emitted += self.block
            rest = buf[self.block:]
            self.parts, self.n = ([rest] if len(rest) else []), len(rest)

    def finish(self, total: int):
        rest = np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)
        rest = _fix_length(rest, max(0, total - self.emitted))
        for i in range(0, len(rest), self.block):
            yield rest[i:i + self.block]


def probe_duration(src, sr: int = SAMPLE_RATE, name: str | None = None,
                   max_seconds: float | None = None) -> float:
    """Duration in seconds, from the header where there is one (cheap; for mp3 and other lossy
    formats an estimate; a damaged or hostile header may lie, see ``max_seconds`` in
    ``load_audio``), else by decoding, which stops once past ``max_seconds`` and returns the
    length decoded by then. In-memory arrays are taken to be at ``sr``."""
    if isinstance(src, tuple) and len(src) == 2 and _as_array(src[0]) is not None:
        _array_input((src[0][:1], src[1]), sr, name)   # validates the rate
        return len(_to_mono_float(_as_array(src[0]), name or "<array>")) / float(src[1])
    arr = _as_array(src)
    if arr is not None:
        return len(_to_mono_float(arr, name or "<array>")) / sr
    source, name = _source(src, name)
    try:
        info = sf.info(source)
        if 0 < info.frames < 2**62:   # libsndfile uses a huge count for "unknown"
            return info.frames / info.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass
    _rewind(source)
    import av
    try:
        with av.open(source, metadata_errors="ignore") as c:
            if not c.streams.audio:
                raise AudioError(name, "contains no audio stream")
            st = c.streams.audio[0]
            # a damaged header may give a negative or absurd length: then decode to measure
            if st.duration and st.time_base and 0 < st.duration * st.time_base < 1e9:
                return float(st.duration * st.time_base)
            if c.duration and 0 < c.duration / av.time_base < 1e9:
                return c.duration / av.time_base
    except av.error.FFmpegError as e:
        raise AudioError(name, _undecodable_reason(source)) from e
    _rewind(source)
    n, rate = 0, 1
    for block, rate in _native_blocks(source, name):
        n += len(block)
        if max_seconds is not None and n / rate > max_seconds:
            break   # closes the decoder; the caller sees a length over its limit
    return n / rate
