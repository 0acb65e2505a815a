"""Generate the built-in ``av_digits`` benchmark (an offline AV-MNIST look-alike).

Images: scikit-learn's 8x8 digits, scaled to [0, 1], one random square patch
zeroed, Gaussian noise added. Audio: the same digit spoken by espeak-ng (many
voices, variants, speeds and pitches), placed at a random offset in a 1 s window
at 16 kHz, white noise at a fixed SNR, a random gain, then MFCCs pooled in time to
a small (T, F) array. Each digit's utterances are split into disjoint train, val and
test pools: val and test images only hear utterances that training never heard.

Usage: ``.venv/bin/python experiments/make_av_digits.py [--out PATH] [--seed N] [--check]``
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
from scipy.fft import dct
from scipy.signal import resample_poly
from sklearn.datasets import load_digits

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VOICES = tuple("en-us en-gb en-gb-scotland en-gb-x-rp en-gb-x-gbclan en-gb-x-gbcwmd en-029 en-us-nyc".split())
# "" = the voice's default; the rest are all of espeak-ng 1.51's variants (the files in
# espeak-ng-data/voices/!v) but "fast" (a speed test) and "Mr serious" (a space in its name).
VARIANTS = ("",) + tuple(
    "Alex Alicia Andrea Andy Annie AnxiousAndy Demonic Denis Diogo Gene Gene2 Henrique Hugo Jacky "
    "Lee Marco Mario Michael Mike Nguyen RicishayMax RicishayMax2 RicishayMax3 Storm Tweaky "
    "UniRobot adam anika anikaRobot announcer antonio aunty belinda benjamin boris caleb croak "
    "david ed edward edward2 f1 f2 f3 f4 f5 grandma grandpa gustave iven iven2 iven3 iven4 john "
    "kaukovalta klatt klatt2 klatt3 klatt4 klatt5 klatt6 linda m1 m2 m3 m4 m5 m6 m7 m8 marcelo "
    "max michel miguel norbert pablo paul pedro quincy rob robert robosoft robosoft2 robosoft3 "
    "robosoft4 robosoft5 robosoft6 robosoft7 robosoft8 sandro shelby steph steph2 steph3 travis "
    "victor whisper whisperf zac".split()
)
SPEED = (140, 250)  # espeak-ng -s, words per minute
PITCH = (20, 80)  # espeak-ng -p, 0..99

# Degradation knobs (tuned so that each modality alone, with the backbones of
# experiments/configs/av_digits.yaml, lands near 70 % test and fusion well above).
PATCH = 3  # side of the zeroed square in each 8x8 image
IMAGE_SIGMA = 0.25  # Gaussian noise on [0, 1] pixels
SNR_DB = 0.0  # white noise relative to the active speech power
GAIN_DB = 10.0  # each sample's overall level is scaled by a gain drawn from +-GAIN_DB
POOL_PER_DIGIT = 100  # distinct utterances synthesised per digit
UTT_FRACS = (0.6, 0.2)  # shares of each digit's pool kept for train and val images (the rest: test)

SR_IN, SR = 22050, 16000
WIN, HOP, NFFT, NMELS, NMFCC, TIME_POOL = 400, 160, 512, 40, 20, 8


def espeak(word: str, voice: str, speed: int, pitch: int, timeout: float = 10.0) -> np.ndarray:
    """Synthesise ``word`` with espeak-ng and return float32 audio at 16 kHz (silence trimmed)."""
    cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word]
    raw = subprocess.run(cmd, capture_output=True, check=True, timeout=timeout).stdout
    # --stdout writes a streaming header (sizes 0x7fffffff): locate the data chunk by hand.
    pos = raw.index(b"data") + 8
    x = np.frombuffer(raw[pos : pos + (len(raw) - pos) // 2 * 2], dtype="<i2").astype(np.float32)
    x = resample_poly(x / 32768.0, SR // 50, SR_IN // 50).astype(np.float32)  # 320 / 441
    active = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
    return x[active[0] : active[-1] + 1] if active.size else x


def synth_pool(rng: np.random.Generator) -> list[dict]:
    """Draw ``POOL_PER_DIGIT`` distinct (voice, variant, speed, pitch) settings per digit."""
    combos = list(itertools.product(VOICES, VARIANTS))
    pool: list[dict] = []
    for digit, word in enumerate(WORDS):
        seen: set[tuple] = set()
        while len(seen) < POOL_PER_DIGIT:
            voice, variant = combos[rng.integers(len(combos))]
            speed, pitch = int(rng.integers(*SPEED)), int(rng.integers(*PITCH))
            key = (voice, variant, speed, pitch)
            if key in seen:
                continue
            seen.add(key)
            full = f"{voice}+{variant}" if variant else voice
            wav = espeak(word, full, speed, pitch)[:SR]  # at most 1 s
            pool.append({"digit": digit, "voice": full, "speed": speed, "pitch": pitch, "wav": wav})
    return pool


def mel_filterbank() -> np.ndarray:
    """Triangular mel filters, shape (NMELS, NFFT // 2 + 1)."""
    lo_mel, hi_mel = 2595.0 * np.log10(1.0 + np.array([20.0, SR / 2]) / 700.0)  # HTK mel scale
    edges = 700.0 * (10.0 ** (np.linspace(lo_mel, hi_mel, NMELS + 2) / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(NFFT, 1.0 / SR)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))


def mfcc(x: np.ndarray, fbank: np.ndarray) -> np.ndarray:
    """MFCCs of a 1 s signal: 25 ms Hann window, 10 ms hop, 40 mel -> NMFCC MFCCs, mean over TIME_POOL frames."""
    n = 1 + (len(x) - WIN) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(x, WIN)[::HOP][:n] * np.hanning(WIN)
    power = np.abs(np.fft.rfft(frames, NFFT)) ** 2
    logmel = np.log(power @ fbank.T + 1e-6)
    c = dct(logmel, type=2, norm="ortho", axis=1)[:, :NMFCC]
    t = n // TIME_POOL
    return c[: t * TIME_POOL].reshape(t, TIME_POOL, NMFCC).mean(axis=1)


def stratified_split(y: np.ndarray, rng: np.random.Generator, fracs=(0.6, 0.2)) -> np.ndarray:
    """0 = train, 1 = val, 2 = test, stratified by class."""
    split = np.full(len(y), 2, dtype=np.int8)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_tr, n_va = round(fracs[0] * len(idx)), round(fracs[1] * len(idx))
        split[idx[:n_tr]], split[idx[n_tr : n_tr + n_va]] = 0, 1
    return split


def degrade_images(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Zero one random PATCH x PATCH square per image and add Gaussian noise."""
    out = img.copy()
    for i in range(len(out)):
        r, c = rng.integers(0, 8 - PATCH + 1, size=2)
        out[i, r : r + PATCH, c : c + PATCH] = 0.0
    return out + rng.normal(0.0, IMAGE_SIGMA, size=out.shape)


def place_audio(wav: np.ndarray, rng: np.random.Generator, fbank: np.ndarray) -> np.ndarray:
    """Random offset in a 1 s window, unit speech power, white noise at SNR_DB, random gain; MFCCs."""
    x = np.zeros(SR, dtype=np.float64)
    off = int(rng.integers(0, SR - len(wav) + 1))
    x[off : off + len(wav)] = wav / np.sqrt(np.mean(wav.astype(np.float64) ** 2) + 1e-12)
    x += rng.normal(0.0, 10.0 ** (-SNR_DB / 20.0), size=SR)
    x *= 10.0 ** (rng.uniform(-GAIN_DB, GAIN_DB) / 20.0)
    return mfcc(x, fbank)


def split_pool(utt_digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """0 = train, 1 = val, 2 = test pool: each digit's utterances cut by UTT_FRACS, disjoint."""
    utt_split = np.full(len(utt_digit), 2, dtype=np.int8)
    for d in np.unique(utt_digit):
        idx = rng.permutation(np.flatnonzero(utt_digit == d))
        n_tr, n_va = round(UTT_FRACS[0] * len(idx)), round(UTT_FRACS[1] * len(idx))
        utt_split[idx[:n_tr]], utt_split[idx[n_tr : n_tr + n_va]] = 0, 1
    return utt_split


def build(seed: int) -> dict[str, np.ndarray]:
    """Build every array of the dataset for ``seed``.

    Each step draws from its own generator (spawned from ``seed``), so changing one
    knob (say the SNR) leaves the images, the split and the utterance pool as they were.
    """
    rng_image, rng_split, rng_pool, rng_pool_split, rng_audio = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )
    digits = load_digits()
    y = digits.target.astype(np.int64)
    image = degrade_images(digits.images / 16.0, rng_image)
    split = stratified_split(y, rng_split)

    pool = synth_pool(rng_pool)
    utt_digit = np.array([u["digit"] for u in pool], dtype=np.int64)
    utt_split = split_pool(utt_digit, rng_pool_split)

    fbank = mel_filterbank()
    utt_id = np.empty(len(y), dtype=np.int16)
    audio = []
    for i, (label, s) in enumerate(zip(y, split, strict=True)):
        choices = np.flatnonzero((utt_digit == label) & (utt_split == s))  # the sample's own split's pool
        utt_id[i] = choices[rng_audio.integers(len(choices))]
        audio.append(place_audio(pool[utt_id[i]]["wav"], rng_audio, fbank))

    info = {
        "seed": seed,
        "sample_rate": SR,
        "window": WIN,
        "hop": HOP,
        "n_fft": NFFT,
        "n_mels": NMELS,
        "n_mfcc": NMFCC,
        "time_pool": TIME_POOL,
        "snr_db": SNR_DB,
        "gain_db": GAIN_DB,
        "image_sigma": IMAGE_SIGMA,
        "patch": PATCH,
        "pool_per_digit": POOL_PER_DIGIT,
        "utterance_fracs": list(UTT_FRACS),
        "split": "0=train 1=val 2=test",
        "utterance_split": "0=train pool 1=val pool 2=test pool",
    }
    return {
        "image": image.astype(np.float16),
        "audio": np.stack(audio).astype(np.float16),
        "y": y,
        "split": split,
        "audio_utterance_id": utt_id,
        "utterance_digit": utt_digit,
        "utterance_split": utt_split,
        "utterance_voice": np.array([u["voice"] for u in pool]),
        "utterance_speed": np.array([u["speed"] for u in pool], dtype=np.int16),
        "utterance_pitch": np.array([u["pitch"] for u in pool], dtype=np.int16),
        "info": np.array(json.dumps(info)),
    }


def check(data: dict[str, np.ndarray], seed: int = 0) -> dict[str, float]:
    """Test accuracy of LogisticRegression on standardised flat features (fit on splits 0+1)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = len(data["y"])
    feats = {
        "image": data["image"].reshape(n, -1).astype(np.float32),
        "audio": data["audio"].reshape(n, -1).astype(np.float32),
    }
    feats["fused"] = np.concatenate([feats["image"], feats["audio"]], axis=1)
    tr, te = data["split"] < 2, data["split"] == 2
    scores = {}
    for name, x in feats.items():
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=3000))
        clf.fit(x[tr], data["y"][tr])
        scores[name] = float(clf.score(x[te], data["y"][te]))
    return scores


def main() -> None:
    """CLI entry point."""
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=here.parent / "search" / "datasets" / "data" / "av_digits.npz")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true", help="fit sklearn classifiers and print accuracies")
    args = ap.parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit(
            "espeak-ng not found: install it (apt-get install espeak-ng) to regenerate av_digits"
        )
    data = build(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **data)
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): "
        f"image {data['image'].shape}, audio {data['audio'].shape}, "
        f"split counts {np.bincount(data['split']).tolist()}"
    )
    if args.check:
        for name, acc in check(data).items():
            print(f"test accuracy {name:6s} {acc:.3f}  (LogisticRegression C=0.05, standardised)")


if __name__ == "__main__":
    main()
