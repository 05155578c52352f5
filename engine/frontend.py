"""Kaldi FBank + LFR stacking, as funasr's WavFrontend computes them (spec section 3).

FBank comes from kaldi-native-fbank, the backend funasr itself falls back to without torchaudio,
with the same options. Dither defaults to 0 (deterministic) unless ``frontend_conf`` sets one.
"""
from __future__ import annotations

import kaldi_native_fbank as knf
import numpy as np
import torch


# The shortest clip the frontend can analyse: under 25 ms the window shrinks to the clip (as
# the reference does), and below 257 samples at 16 kHz its FFT has too few bins for 80 mel
# filters (kaldi-native-fbank refuses). Shorter input is refused with a clear error instead.
MIN_SECONDS = 0.02


def too_short(samples: int, rate: int = 16000) -> str:
    return (f"too short to transcribe ({1000 * samples / rate:.1f} ms of audio; at least "
            f"{1000 * MIN_SECONDS:g} ms)")


class Frontend:
    def __init__(self, fs: int = 16000, window: str = "hamming", n_mels: int = 80,
                 frame_length: float = 25, frame_shift: float = 10, lfr_m: int = 7,
                 lfr_n: int = 6, dither: float = 0.0, snip_edges: bool = True,
                 upsacle_samples: bool = True, cmvn_file=None, **_unused):
        if cmvn_file:
            raise ValueError("frontend_conf.cmvn_file is set, but Fun-ASR-Nano uses no CMVN")
        self.fs, self.window, self.n_mels = fs, window, n_mels
        self.frame_length, self.frame_shift = frame_length, frame_shift
        self.lfr_m, self.lfr_n = lfr_m, lfr_n
        self.dither, self.snip_edges, self.upscale = dither, snip_edges, upsacle_samples

    def output_size(self) -> int:
        return self.n_mels * self.lfr_m

    def fbank(self, wave: np.ndarray) -> torch.Tensor:
        """(T, n_mels) log-mel energies of a 16 kHz float waveform in [-1, 1]."""
        wave = np.asarray(wave, dtype=np.float32)
        if self.upscale:
            wave = wave * 32768.0  # Kaldi works in int16 scale
        opts = knf.FbankOptions()
        f = opts.frame_opts
        f.samp_freq = float(self.fs)
        # The reference shortens the window for clips under 25 ms to one frame of the whole clip.
        f.frame_length_ms = float(min(self.frame_length, len(wave) / self.fs * 1000))
        f.frame_shift_ms = float(self.frame_shift)
        f.dither = float(self.dither)
        f.snip_edges = bool(self.snip_edges)
        f.window_type = self.window
        opts.mel_opts.num_bins = self.n_mels
        opts.energy_floor = 0.0
        fb = knf.OnlineFbank(opts)
        fb.accept_waveform(float(self.fs), wave)
        fb.input_finished()
        n = fb.num_frames_ready
        if n == 0:
            return torch.zeros((0, self.n_mels))
        return torch.from_numpy(np.stack([fb.get_frame(i) for i in range(n)]))

    def lfr(self, feats: torch.Tensor) -> torch.Tensor:
        """Stack lfr_m frames every lfr_n: frame i joins frames clamp(n*i - (m-1)//2 + j)."""
        t = feats.shape[0]
        out_len = -(-t // self.lfr_n)
        idx = (torch.arange(out_len)[:, None] * self.lfr_n
               + torch.arange(self.lfr_m)[None, :] - (self.lfr_m - 1) // 2).clamp(0, t - 1)
        return feats[idx].reshape(out_len, -1)

    def __call__(self, wave: np.ndarray) -> torch.Tensor:
        return self.lfr(self.fbank(wave))

    def batch(self, waves) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero-padded (B, T, 560) features and their lengths."""
        feats = [self(w) for w in waves]
        lengths = torch.tensor([f.shape[0] for f in feats])
        return torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lengths
