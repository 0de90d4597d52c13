"""Make the voice-activity example from the installed silero-vad package: a .pt2 and audio to check it on.

Writes into FOLDER (default: a cache folder; nothing is downloaded):
  silero_vad.pt2  silero's shipped TorchScript network (16 kHz) exported by torch.export, with its
                  streaming state as inputs and outputs (see model.py): (chunk, lstm_state, context) ->
                  {prob, new_lstm_state, new_context}
  audio.npz       `chunk` (N, 512) float32: consecutive 32 ms chunks of 16 kHz audio in [-1, 1], in
                  stream order; `labels` (N,) 1 where the generator put speech in most of the chunk;
                  `preprocessing` (JSON) saying so. The state and context start at zero, as in silero.

The audio alternates speech-like spans (voiced syllables: a glottal pulse train at a drifting pitch
through formant resonators, with fricative noise bursts), speech in noise, silence and noise alone.
`--speech espeak` uses espeak-ng's synthetic voice instead, when the program is installed.

    python examples/vad/make.py [FOLDER] [--seconds 48] [--speech synthetic|espeak]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SR = 16000
CHUNK = 512
# (F1, F2, F3) in Hz of a few vowels (Peterson & Barney averages): enough to make syllables differ.
VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410),
          (660, 1720, 2410), (490, 1350, 1690), (440, 1020, 2240))  # fmt: skip
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags, and we will go meet her on Wednesday.",
    "Turn the volume down a little, the neighbours are trying to sleep.",
)


def default_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgekit-examples" / "vad"


def _resonator(x: np.ndarray, freq: float, bandwidth: float) -> np.ndarray:
    from scipy.signal import lfilter

    r, theta = np.exp(-np.pi * bandwidth / SR), 2 * np.pi * freq / SR
    return np.asarray(lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], x))


def _syllable(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = rng.uniform(90, 230) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(1, 3) * t + rng.uniform(0, 6)))
    pulses = (np.mod(2 * np.pi * np.cumsum(f0) / SR, 2 * np.pi) < 0.8 * np.pi).astype(np.float64)
    source = np.diff(pulses, prepend=0.0) + 0.02 * rng.standard_normal(n)
    formants = VOWELS[rng.integers(len(VOWELS))]
    voiced = sum(
        gain * _resonator(source, f * rng.uniform(0.9, 1.1), 80 + 40 * i)
        for i, (f, gain) in enumerate(zip(formants, (1.0, 0.6, 0.3), strict=True))
    )
    return np.asarray(voiced) * np.sin(np.pi * np.linspace(0, 1, n)) ** 0.6


def _fricative(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * SR)
    return 0.3 * _resonator(rng.standard_normal(n), rng.uniform(3000, 6000), 1500) * np.hanning(n)


def synthetic_speech(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Speech-like audio: syllables with formants and pitch, fricatives, short pauses."""
    parts: list[np.ndarray] = []
    while sum(map(len, parts)) < seconds * SR:
        if rng.random() < 0.3:
            parts.append(_fricative(rng, rng.uniform(0.05, 0.12)))
        parts.append(_syllable(rng, rng.uniform(0.12, 0.3)))
        if rng.random() < 0.2:
            parts.append(np.zeros(int(rng.uniform(0.03, 0.1) * SR)))
    y = np.concatenate(parts)[: int(seconds * SR)]
    return y / np.abs(y).max() * rng.uniform(0.2, 0.6)


def espeak_speech(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A sentence spoken by espeak-ng (22.05 kHz, resampled to 16 kHz), cut or padded to `seconds`."""
    import wave

    from scipy.signal import resample_poly

    voice = str(rng.choice(["en", "en-us", "en+f3", "en+m3", "en-gb-x-rp"]))
    text = str(rng.choice(SENTENCES))
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        espeak = shutil.which("espeak-ng") or "espeak-ng"
        command = [espeak, "-v", voice, "-s", str(int(rng.uniform(140, 190))), "-w", str(wav), text]
        subprocess.run(command, check=True, capture_output=True)  # noqa: S603 - our own fixed arguments
        with wave.open(str(wav)) as f:
            rate, raw = f.getframerate(), f.readframes(f.getnframes())
    y = resample_poly(np.frombuffer(raw, dtype=np.int16) / 32768.0, SR, rate)
    y = np.pad(y, (0, max(0, int(seconds * SR) - len(y))))[: int(seconds * SR)]
    return y / max(np.abs(y).max(), 1e-6) * rng.uniform(0.2, 0.6)


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    from scipy.signal import lfilter

    white = rng.standard_normal(n)
    noise = np.asarray(lfilter([1.0], [1.0, -0.95], white)) if rng.random() < 0.5 else white  # brown or white
    return noise / np.abs(noise).max()


def make_audio(seconds: float, seed: int = 0, speech: str = "synthetic") -> tuple[np.ndarray, np.ndarray]:
    """Return (audio float32 at 16 kHz, per-sample speech truth) alternating speech, noise and silence spans."""
    rng = np.random.default_rng(seed)
    talk = espeak_speech if speech == "espeak" else synthetic_speech
    spans: list[np.ndarray] = []
    truth: list[np.ndarray] = []
    while sum(map(len, spans)) < seconds * SR:
        kind = rng.choice(["speech", "speech in noise", "silence", "noise"], p=[0.35, 0.15, 0.25, 0.25])
        n = int(rng.uniform(0.5, 2.5) * SR)
        floor = 0.002 * rng.standard_normal(n)
        if kind == "speech":
            y = talk(rng, n / SR) + floor
        elif kind == "speech in noise":
            y = talk(rng, n / SR)
            y = y + _noise(rng, n) * np.abs(y).max() * rng.uniform(0.05, 0.2)
        elif kind == "silence":
            y = floor
        else:
            y = _noise(rng, n) * rng.uniform(0.02, 0.2)
        spans.append(y)
        # espeak pads with silence: only where the voice is audible is it speech
        voiced = np.abs(y) > 0.01 if kind.startswith("speech") and speech == "espeak" else np.full(n, "speech" in kind)
        truth.append(voiced)
    audio = np.clip(np.concatenate(spans), -1.0, 1.0).astype(np.float32)
    return audio, np.concatenate(truth)


def chunks(audio: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut 16 kHz audio into silero's 512-sample chunks; a chunk is speech when most of it is."""
    n = len(audio) // CHUNK
    return audio[: n * CHUNK].reshape(n, CHUNK), (truth[: n * CHUNK].reshape(n, CHUNK).mean(axis=1) > 0.5)


def export_pt2(path: Path) -> None:
    """Export silero's shipped network (16 kHz, state explicit) with torch.export and save it."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("vad_model", Path(__file__).with_name("model.py"))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    model = module.build()
    # sr keeps its default (16000): a .pt2 takes tensors only. The factory form takes it from
    # the recipe instead: [model] constants = {sr = 16000}.
    torch.export.save(torch.export.export(model, model.example_input(), strict=False), str(path))


def make(folder: Path, *, seconds: float = 48.0, seed: int = 0, speech: str = "synthetic") -> dict[str, Path]:
    """Write silero_vad.pt2 and audio.npz into `folder`; return their paths."""
    if speech == "espeak" and shutil.which("espeak-ng") is None:
        raise SystemExit("--speech espeak needs espeak-ng (apt-get install espeak-ng)")
    folder.mkdir(parents=True, exist_ok=True)
    audio, truth = make_audio(seconds, seed, speech)
    x, labels = chunks(audio, truth)
    preprocessing = {
        "audio": "mono float32 samples in [-1, 1]",
        "sample_rate": SR,
        "chunk": f"{CHUNK} consecutive samples (32 ms), in stream order",
        "state": "lstm_state (1, 2, 128) and context (1, 64) start at zero and are fed back from new_lstm_state and "
        "new_context",
    }
    paths = {"data": folder / "audio.npz", "model": folder / "silero_vad.pt2"}
    np.savez(paths["data"], chunk=x, labels=labels.astype(np.int64), preprocessing=json.dumps(preprocessing))
    export_pt2(paths["model"])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=default_folder())
    parser.add_argument("--seconds", type=float, default=48.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speech", choices=["synthetic", "espeak"], default="synthetic")
    args = parser.parse_args()
    for name, path in make(args.folder, seconds=args.seconds, seed=args.seed, speech=args.speech).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
