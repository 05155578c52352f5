"""Audio files of every supported format, made at test time from real clips (soundfile for what
libsndfile writes, PyAV's bundled FFmpeg for the rest), and header edits that make a container
lie about its length. Used by the limit tests and the fuzz test; nothing here is committed audio.
"""
from __future__ import annotations

import io
import struct
from pathlib import Path

import av
import numpy as np
import soundfile as sf

# name -> (writer, container/format, codec or subtype, sample rate the codec runs at)
FORMATS = {
    "wav": ("sf", "WAV", "PCM_16", None),
    "flac": ("sf", "FLAC", "PCM_16", None),
    "mp3": ("sf", "MP3", "MPEG_LAYER_III", None),
    "ogg": ("sf", "OGG", "VORBIS", None),
    "opus": ("sf", "OGG", "OPUS", 48000),
    "m4a": ("av", "ipod", "aac", None),
    "webm": ("av", "webm", "libopus", 48000),
    "mkv": ("av", "matroska", "flac", None),
}


def encode(fmt: str, audio: np.ndarray, rate: int) -> bytes:
    """``audio`` (1-D float32 at ``rate``) as a file of format ``fmt`` (a key of FORMATS)."""
    writer, container, codec, codec_rate = FORMATS[fmt]
    if codec_rate and codec_rate != rate:
        import soxr
        audio, rate = soxr.resample(audio, rate, codec_rate).astype(np.float32), codec_rate
    buf = io.BytesIO()
    if writer == "sf":
        with sf.SoundFile(buf, "w", samplerate=rate, channels=1, format=container,
                          subtype=codec) as f:
            for i in range(0, len(audio), rate * 30):
                f.write(audio[i:i + rate * 30])
        return buf.getvalue()
    sample_fmt = "s16" if codec == "flac" else "fltp"
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        step = rate * 10
        for i in range(0, len(audio), step):
            block = audio[i:i + step]
            if sample_fmt == "s16":
                block = (np.clip(block, -1, 1) * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block[None]),
                                               format=sample_fmt, layout="mono")
            frame.sample_rate, frame.pts = rate, i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


# --------------------------------------------------------------------------- header edits

def _put(data: bytearray, pos: int, fmt: str, value) -> None:
    data[pos:pos + struct.calcsize(fmt)] = struct.pack(fmt, value)


def wav_data_size(data: bytes, size: int) -> bytes:
    """The WAV's ``data`` chunk (and RIFF) size fields set to ``size`` bytes."""
    out = bytearray(data)
    pos = out.index(b"data", 12)
    _put(out, pos + 4, "<I", size & 0xFFFFFFFF)
    _put(out, 4, "<I", (size + pos - 4) & 0xFFFFFFFF)
    return bytes(out)


def flac_total_samples(data: bytes, total: int) -> bytes:
    """STREAMINFO's 36-bit total sample count set to ``total`` (0 means 'unknown')."""
    out = bytearray(data)
    assert out[:4] == b"fLaC" and out[4] & 0x7F == 0   # STREAMINFO is the first block
    word = struct.unpack(">Q", out[18:26])[0]
    word = (word & ~((1 << 36) - 1)) | (total & ((1 << 36) - 1))
    _put(out, 18, ">Q", word)
    return bytes(out)


def _ogg_crc(page: bytes) -> int:
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = (crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1
        crc &= 0xFFFFFFFF
    return crc


def ogg_pages(data: bytes) -> list[int]:
    out, pos = [], data.find(b"OggS")
    while pos >= 0:
        out.append(pos)
        pos = data.find(b"OggS", pos + 4)
    return out


def ogg_set_page(data: bytes, page: int, granule: int | None = None, crc: bool = True) -> bytes:
    """Page at offset ``page``: granule position set, CRC recomputed (so decoders accept it)."""
    out = bytearray(data)
    if granule is not None:
        _put(out, page + 6, "<q", granule)
    if crc:
        nseg = out[page + 26]
        size = 27 + nseg + sum(out[page + 27:page + 27 + nseg])
        _put(out, page + 22, "<I", 0)
        _put(out, page + 22, "<I", _ogg_crc(bytes(out[page:page + size])))
    return bytes(out)


def ogg_last_granule(data: bytes, granule: int) -> bytes:
    """The last page's granule position (where readers take the length from) set."""
    return ogg_set_page(data, ogg_pages(data)[-1], granule)


def mp4_duration(data: bytes, seconds: float) -> bytes:
    """mvhd, tkhd and mdhd durations (version-0 boxes) set to ``seconds``, each in its own
    timescale (the movie's for mvhd and tkhd, the track's for mdhd)."""
    out = bytearray(data)
    movie_scale = 1000
    for box, off in ((b"mvhd", 20), (b"tkhd", 24), (b"mdhd", 20)):
        pos = out.find(box)
        if pos < 0 or out[pos + 4] != 0:
            continue
        if box != b"tkhd":
            scale = struct.unpack(">I", out[pos + 16:pos + 20])[0]
            movie_scale = scale if box == b"mvhd" else movie_scale
        _put(out, pos + off, ">I", int(seconds * (movie_scale if box == b"tkhd" else scale)))
    return bytes(out)


def mkv_duration(data: bytes, value: float) -> bytes:
    """The Segment Info Duration element (ID 0x4489; a float, in TimecodeScale units, 1 ms by
    default) set to ``value``."""
    out = bytearray(data)
    for size, fmt in ((b"\x88", ">d"), (b"\x84", ">f")):
        pos = out.find(b"\x44\x89" + size)
        if pos >= 0:
            _put(out, pos + 3, fmt, value)
            return bytes(out)
    raise ValueError("no Duration element")


def mp3_strip_headers(data: bytes) -> bytes:
    """No ID3 tag and no Xing/Info/VBRI frame: raw MPEG frames, nothing says how long it is."""
    from engine.audio.decode import _mp3_frame_length
    pos = 0
    if data[:3] == b"ID3":
        pos = 10 + ((data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7
                    | (data[9] & 0x7F))
    while not _mp3_frame_length(data[pos:pos + 4]):
        pos += 1
        if pos >= len(data):   # a damaged file (the fuzzer's) may hold no frame at all
            raise ValueError("no MPEG audio frame")
    n = _mp3_frame_length(data[pos:pos + 4])
    first = data[pos:pos + n]
    if b"Xing" in first or b"Info" in first or b"VBRI" in first:
        pos += n
    return data[pos:]


def claim_seconds(fmt: str, data: bytes, seconds: float, rate: int) -> bytes:
    """``data`` whose header claims ``seconds`` of audio (0: says nothing, where the format
    allows), whatever it holds. MP3 has no length field: its headers are removed."""
    if fmt == "wav":
        return wav_data_size(data, int(seconds * rate) * 2) if seconds else \
            wav_data_size(data, 0xFFFFFFFF)
    if fmt == "flac":
        return flac_total_samples(data, int(seconds * rate))
    if fmt in ("ogg", "opus"):
        return ogg_last_granule(data, int(seconds * (48000 if fmt == "opus" else rate)))
    if fmt == "m4a":
        return mp4_duration(data, seconds)
    if fmt in ("webm", "mkv"):
        return mkv_duration(data, seconds * 1000.0)
    if fmt == "mp3":
        return mp3_strip_headers(data)
    raise ValueError(fmt)


def half_speed_jfk(speech_dir, dest) -> Path:
    """JFK's first 7 s played at half speed (each sample twice: an octave lower, 14 s) as
    ``dest/jfk_half_speed.wav``. The demo checkpoint loops on it ("abra abra ..." to the token
    limit); the stage-1 checkpoint looped on the plain clip and stage 2 on the first 5.5 s at
    half speed, the stage-3 one on neither, so the repetition guard's tests need an input that
    still makes a trained model loop."""
    from engine.audio import load_audio

    jfk = load_audio(str(Path(speech_dir) / "en" / "whisper_jfk.flac"))
    out = Path(dest) / "jfk_half_speed.wav"
    sf.write(out, np.repeat(jfk[: 16000 * 7], 2).astype(np.float32), 16000, subtype="PCM_16")
    return out
