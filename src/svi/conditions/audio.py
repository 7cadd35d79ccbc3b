"""Audio in, per-video-frame features out: wav reading, mono mix, resampling, log-mel.

The weight-free features of the world model (and of anyone without wav2vec2 weights):
the audio is mixed to mono, resampled to :data:`SAMPLE_RATE` (16 kHz, as SVI-Talk's
wav2vec2 expects), turned into a power spectrogram (hann window of 25 ms, hop 10 ms,
``n_fft`` 512, zero padding at both ends) and a mel filterbank (HTK mel scale,
0 - 8 kHz). Video frame ``t`` owns the samples ``[t * sr / fps, (t + 1) * sr / fps)``
(the world's envelope uses the same windows, :mod:`svi.world.talking`); its feature
is the mean mel power of the STFT frames centred in that window, as
``log10(power + 1e-10)``: 0 is a full-scale sine, silence is -10. Frames past the end
of the audio are silence (so is a last frame with under 10 ms of audio). A feature
depends on the audio within 16 ms of its window only: appending audio to a file
changes no feature but the last frame's.

:func:`read_wav` reads RIFF/WAVE files (PCM 8/16/24/32-bit, IEEE float 32/64,
WAVE_FORMAT_EXTENSIBLE) with numpy; anything else is an :class:`SviError`.
"""

from __future__ import annotations

import logging
import math
import os
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

from svi.errors import SviError

logger = logging.getLogger(__name__)

__all__ = [
    "HOP",
    "N_MELS",
    "SAMPLE_RATE",
    "audio_features",
    "mel_filterbank",
    "num_video_frames",
    "read_wav",
    "resample",
    "to_mono",
]

SAMPLE_RATE = 16_000  # Hz: features are computed at this rate (wav2vec2's rate)
HOP = 160  # samples at 16 kHz: 10 ms between STFT frames
N_FFT = 512
WIN = 400  # 25 ms hann window
N_MELS = 40
F_MAX = 8_000.0  # Hz, the Nyquist frequency of SAMPLE_RATE
LOG_FLOOR = 1e-10
MAX_FPS = SAMPLE_RATE / HOP  # every video frame must own at least one STFT frame
_MAX_CHANNELS = 32

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


# ------------------------------------------------------------------------ reading


def _chunks(data: bytes, path: str) -> dict[bytes, bytes]:
    """The top-level chunks of a RIFF/WAVE file (first occurrence of each id)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise SviError(f"cannot read wav {path}: not a RIFF/WAVE file")
    chunks: dict[bytes, bytes] = {}
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = data[pos + 8 : pos + 8 + size]
        # a streamed writer may leave the data size at 0xFFFFFFFF: read to the end
        if len(body) < size and (cid != b"data" or size != 0xFFFFFFFF):
            raise SviError(
                f"cannot read wav {path}: chunk {cid.decode('latin-1')!r} is truncated "
                f"({len(body)} of {size} bytes)"
            )
        chunks.setdefault(cid, body)
        pos += 8 + size + (size & 1)
    return chunks


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """``(audio, sample_rate)`` of a wav file: audio (N, C) float32 in [-1, 1].

    Integer PCM is scaled by its full scale (``2 ** (bits - 1)``; 8-bit is unsigned);
    float files are returned as stored. A missing, truncated or unsupported file is an
    :class:`SviError` with one line naming the problem.
    """
    shown = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise SviError(f"cannot read wav {shown}: {exc.strerror or exc}") from None
    chunks = _chunks(data, shown)
    fmt, body = chunks.get(b"fmt "), chunks.get(b"data")
    if fmt is None or len(fmt) < 16:
        raise SviError(f"cannot read wav {shown}: no valid 'fmt ' chunk")
    if body is None:
        raise SviError(f"cannot read wav {shown}: no 'data' chunk")
    tag = int.from_bytes(fmt[0:2], "little")
    channels = int.from_bytes(fmt[2:4], "little")
    rate = int.from_bytes(fmt[4:8], "little")
    bits = int.from_bytes(fmt[14:16], "little")
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = int.from_bytes(fmt[24:26], "little")  # first two bytes of the subformat GUID
    if not 1 <= channels <= _MAX_CHANNELS or rate <= 0:
        raise SviError(f"cannot read wav {shown}: {channels} channels at {rate} Hz")
    width = bits // 8
    if (tag, bits) not in {(_PCM, 8), (_PCM, 16), (_PCM, 24), (_PCM, 32), (_FLOAT, 32)} | {
        (_FLOAT, 64)
    }:
        raise SviError(
            f"cannot read wav {shown}: unsupported sample format (tag {tag}, {bits} bits); "
            "convert it to 16-bit PCM, e.g. ffmpeg -i IN -c:a pcm_s16le OUT.wav"
        )
    frames = len(body) // (width * channels)
    raw = np.frombuffer(body, dtype=np.uint8, count=frames * width * channels)
    if tag == _FLOAT:
        audio = raw.view("<f4" if bits == 32 else "<f8").astype(np.float32)
    elif bits == 8:
        audio = (raw.astype(np.float32) - 128.0) / 128.0
    elif bits == 24:
        b = raw.reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        audio = (np.where(value >= 1 << 23, value - (1 << 24), value) / float(1 << 23)).astype(
            np.float32
        )
    else:
        audio = (raw.view(f"<i{width}").astype(np.float64) / float(1 << (bits - 1))).astype(
            np.float32
        )
    return audio.reshape(frames, channels), rate


# ----------------------------------------------------------------- mono, resample


def to_mono(wav: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N,) float32 mono of (N,) or (N, C) audio (channels averaged).

    Float audio is taken as it is (full scale 1); integer PCM is scaled to [-1, 1]
    (uint8 is offset binary, as in wav files).
    """
    audio = wav if isinstance(wav, torch.Tensor) else torch.as_tensor(np.asarray(wav))
    if audio.dtype == torch.bool or audio.is_complex():
        raise SviError(f"audio must hold real samples, got {audio.dtype}")
    if audio.dtype == torch.uint8:
        audio = (audio.to(torch.float64) - 128.0) / 128.0
    elif not audio.is_floating_point():
        audio = audio.to(torch.float64) / float(1 << (torch.iinfo(audio.dtype).bits - 1))
    if audio.ndim == 2:
        if audio.shape[1] > _MAX_CHANNELS and audio.shape[0] <= _MAX_CHANNELS:
            raise SviError(
                f"audio of shape {tuple(audio.shape)} looks like (channels, samples); "
                "pass (samples, channels)"
            )
        audio = audio.to(torch.float32).mean(dim=1)
    elif audio.ndim != 1:
        raise SviError(f"audio must be (samples,) or (samples, channels), got {tuple(audio.shape)}")
    audio = audio.to(torch.float32)
    if not torch.isfinite(audio).all():
        raise SviError("audio holds NaN or inf samples")
    return audio


def _sinc_kernels(orig: int, new: int, zeros: int = 6, rolloff: float = 0.99) -> torch.Tensor:
    """(new, 1, taps) hann-windowed sinc kernels of the polyphase resampler."""
    base = min(orig, new) * rolloff
    width = math.ceil(zeros * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, :] / orig
    t = (-torch.arange(new, dtype=torch.float64)[:, None] / new + idx) * base
    t = t.clamp(-zeros, zeros)
    window = torch.cos(t * math.pi / zeros / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, 1.0, t))
    return (sinc * window * base / orig)[:, None, :]


def resample(audio: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling of (N,) audio (hann-windowed sinc, 6 zero crossings).

    Output length ``ceil(N * new / orig)``; the same filter as torchaudio's default
    ``sinc_interp_hann``, written out so no audio library is needed.
    """
    if orig_rate <= 0 or new_rate <= 0:
        raise SviError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return audio
    g = math.gcd(orig_rate, new_rate)
    orig, new = orig_rate // g, new_rate // g
    kernels = _sinc_kernels(orig, new)
    width = (kernels.shape[-1] - orig) // 2
    n = audio.shape[0]
    x = F.pad(audio.to(torch.float64)[None, None], (width, width + orig))
    out = F.conv1d(x, kernels, stride=orig)  # (1, new, blocks)
    out = out.transpose(1, 2).reshape(-1)
    return out[: math.ceil(new * n / orig)].to(torch.float32)


# ------------------------------------------------------------------------ log-mel


def _fps_fraction(fps: float) -> Fraction:
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and 0 < fps <= MAX_FPS):
        raise SviError(f"fps must be in (0, {MAX_FPS:g}], got {fps!r}")
    return Fraction(fps).limit_denominator(10_000)


def num_video_frames(num_samples: int, sample_rate: int, fps: float) -> int:
    """Video frames that ``num_samples`` of audio spans: ``ceil(N * fps / sr)``.

    A frame exists when its window starts before the audio ends (the released Talk
    script floors, ``int(duration * 25)``, dropping a last partial frame).
    """
    f = _fps_fraction(fps)
    return -(-num_samples * f.numerator // (sample_rate * f.denominator))


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular HTK-mel filters over 0 - 8 kHz at 16 kHz."""
    if n_mels < 1:
        raise SviError(f"n_mels must be >= 1, got {n_mels}")

    def mel(hz: torch.Tensor) -> torch.Tensor:
        return 2595.0 * torch.log10(1.0 + hz / 700.0)

    bins = torch.linspace(0.0, SAMPLE_RATE / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = torch.linspace(0.0, float(mel(torch.tensor(F_MAX))), n_mels + 2, dtype=torch.float64)
    hz = 700.0 * (10.0 ** (edges / 2595.0) - 1.0)
    lo, mid, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (bins[None] - lo) / (mid - lo)
    down = (hi - bins[None]) / (hi - mid)
    return torch.clamp(torch.minimum(up, down), min=0.0).to(torch.float32)


def audio_features(
    wav: np.ndarray | torch.Tensor,
    sample_rate: int,
    fps: float,
    n_mels: int = N_MELS,
    num_frames: int | None = None,
) -> torch.Tensor:
    """(T, n_mels) float32 log-mel features, one row per video frame (module docstring).

    ``wav`` is (N,) or (N, C) (channels averaged) at ``sample_rate``; T is
    ``num_frames`` or :func:`num_video_frames`. Silence gives finite features (-10).
    """
    f = _fps_fraction(fps)
    audio = resample(to_mono(wav), int(sample_rate), SAMPLE_RATE)
    n = int(audio.shape[0])
    if num_frames is None:
        num_frames = num_video_frames(n, SAMPLE_RATE, fps)
    if num_frames < 0:
        raise SviError(f"num_frames must be >= 0, got {num_frames}")
    filters = mel_filterbank(n_mels)
    if n == 0:
        return torch.full((num_frames, n_mels), math.log10(LOG_FLOOR))
    window = torch.hann_window(WIN, periodic=True, dtype=torch.float32)
    spec = torch.stft(
        audio,
        N_FFT,
        hop_length=HOP,
        win_length=WIN,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )  # (n_fft // 2 + 1, 1 + N // HOP)
    power = (spec.abs() / (window.sum() / 2)) ** 2  # a full-scale sine peaks near 1
    mel_power = (filters @ power).T  # (S, n_mels)
    # STFT frame s is centred on sample s * HOP: it belongs to video frame floor(s*HOP*fps/sr).
    centres = torch.arange(mel_power.shape[0], dtype=torch.int64) * HOP
    owner = centres * f.numerator // (SAMPLE_RATE * f.denominator)
    keep = (owner < num_frames) & (centres < n)  # a frame centred on the end hears half silence
    sums = torch.zeros(num_frames, n_mels, dtype=torch.float64)
    sums.index_add_(0, owner[keep], mel_power[keep].to(torch.float64))
    counts = torch.bincount(owner[keep], minlength=num_frames).clamp(min=1)
    mean = sums / counts[:, None]
    return torch.log10(mean + LOG_FLOOR).to(torch.float32)
