"""Generated tasks on categorical fields and token sequences, with known structure (planted kind).

Both return raw arrays as a user's npz would hold them: int64 IDs and tokens, float features.
`load_planted` reads, besides the sizes and the seed: ctr `d`, `positive`, `rank`; sentiment
`d`, `noise`, `seq_len`, `min_len` (any other planted key is refused).

- ctr:       a binary click task (`fields`, `item`). `fields` int64 `(n, 6)`: one categorical ID
             per field, cardinalities 10, 50, 200, 1000, 5000, 10000, drawn Zipf-like (the ID of
             rank `r` with probability ∝ `r^-1.1`), then each field's IDs permuted so that an ID's
             value says nothing of its frequency. `item` float `(n, d)` (default d 16): a dense
             item embedding `N(0, I)`. The click logit is a bias, one normal effect per ID of
             each field, three field×field interactions (dot products of rank-`rank` per-ID
             vectors, default 4), a field×item interaction (a per-ID vector of the 50-ID field
             dotted with `item`) and a small item effect; the bias is set so that `positive`
             (default 0.04) of the samples click, `y ~ Bernoulli(sigmoid(logit))`. `meta`
             keeps `oracle_auc`, the AUC of the true logit on test (about 0.8: what no model
             can beat), and the logit per split. Defaults: n_train 20000, n_test 5000.
- sentiment: a regression target in [-3, 3], as CMU-MOSI (`text`, `audio`, `visual`). `text`
             int64 `(n, T)` token IDs (T = `seq_len`, default 20, at least 11; 0 = padding,
             trailing); a sample's length (`min_len`, default 5, ..T) is shared by the three
             modalities. The 300 words: "not", 3 intensifiers (x1.5-2), 15 positive and 15
             negative words (a polarity each, 0.3-1.2), 6 ambiguous words (a polarity of their
             own at each use) and Zipf-like filler; an intensifier or "not" acts on the next
             sentiment word, so "not good" and "good not" differ. Each use of a sentiment word
             has an emphasis (x0.5-1.5); its contribution is polarity x emphasis x intensifiers,
             negated by an odd number of "not" (`word_contributions`), and
             `y = clip(Σ contributions + noise·ε, -3, 3)` (`noise` default 0.1). `audio`,
             `visual` float `(n, T, d)` (default d 8) frames aligned to the words: `N(0, 1)`
             noise, plus at each sentiment word 3 x |contribution| on the first 3 audio features
             (the intensity) and 0.5 x the contribution on the first 3 visual ones (the
             expression). Text carries most of the signal but misses the emphasis and the
             ambiguous words' sign, which audio and visual carry: `meta['text_r2']`, the R² on
             test of the best text-only guess (lexicon polarities, mean emphasis), is about 0.72,
             `meta['oracle_r2']` (the true contributions) about 0.99. Defaults: n_train 2000,
             n_test 600.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from search.datasets.common import SPLITS, DataError, opt_float, opt_int

Arrays = dict[str, np.ndarray]

# ---------------------------------------------------------------- ctr
CARDINALITIES = (10, 50, 200, 1000, 5000, 10000)
ZIPF_S = 1.1
PAIRS = ((0, 3), (1, 4), (2, 5))  # fields whose IDs interact
ITEM_FIELD = 1  # the field whose IDs interact with the item embedding (50 IDs: learnable)
# term scales (logit std of each part): the true logit's AUC comes to about 0.8
_MAIN, _PAIR, _ITEM_FIELD, _ITEM = 0.38, 0.40, 0.45, 0.30


def zipf_ids(rng: np.random.Generator, n: int, cardinality: int, s: float = ZIPF_S) -> np.ndarray:
    """`n` IDs in `0..cardinality-1`, the rank-`r` ID drawn with probability ∝ `r^-s`; which ID
    has which rank is a random permutation. int64 `(n,)`."""
    p = np.arange(1, cardinality + 1, dtype=float) ** -s
    ranks = rng.choice(cardinality, size=n, p=p / p.sum())
    return rng.permutation(cardinality)[ranks].astype(np.int64)


def bias_for(logit: np.ndarray, positive: float) -> float:
    """The bias `b` with `mean(sigmoid(logit + b)) = positive` (bisection: the mean is monotone in `b`)."""
    lo, hi = -50.0, 50.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if np.mean(_sigmoid(logit + mid)) > positive else (mid, hi)
    return (lo + hi) / 2


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def ctr_arrays(rng: np.random.Generator, n: int, d: int = 16, positive: float = 0.04,
               rank: int = 4) -> tuple[Arrays, np.ndarray, dict]:
    """`({'fields': (n, 6) int64, 'item': (n, d)}, clicks (n,) int64 0/1, meta)`; `meta['logit']`
    is each sample's true logit (see the module doc)."""
    fields = np.stack([zipf_ids(rng, n, c) for c in CARDINALITIES], axis=1)  # (n, F)
    item = rng.standard_normal((n, d))
    logit = sum(_MAIN * rng.standard_normal(c)[fields[:, f]] for f, c in enumerate(CARDINALITIES))
    for a, b in PAIRS:
        va = rng.standard_normal((CARDINALITIES[a], rank))[fields[:, a]]  # (n, rank)
        vb = rng.standard_normal((CARDINALITIES[b], rank))[fields[:, b]]
        logit = logit + _PAIR * np.einsum("nk,nk->n", va, vb) / np.sqrt(rank)
    u = rng.standard_normal((CARDINALITIES[ITEM_FIELD], d))[fields[:, ITEM_FIELD]]  # (n, d)
    logit = logit + _ITEM_FIELD * np.einsum("nd,nd->n", u, item) / np.sqrt(d)
    logit = logit + _ITEM * item @ rng.standard_normal(d) / np.sqrt(d)
    logit = logit + bias_for(logit, positive)
    y = (rng.random(n) < _sigmoid(logit)).astype(np.int64)
    meta = {"cardinalities": CARDINALITIES, "pairs": PAIRS, "item_field": ITEM_FIELD, "logit": logit}
    return {"fields": fields, "item": item}, y, meta


def rank_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """AUC as the Mann-Whitney statistic from average ranks (ties half); numpy only."""
    positive = np.asarray(positive, dtype=bool)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # the average 1-based rank of each value
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _ctr_finish(meta: dict, y: np.ndarray, splits: Sequence[np.ndarray]) -> dict:
    logit, test = meta.pop("logit"), splits[-1]
    return {**meta, "oracle_auc": rank_auc(logit[test], y[test] == 1),
            "logit": {s: logit[i] for s, i in zip(SPLITS, splits, strict=True)}}


# ---------------------------------------------------------------- sentiment
PAD, NOT = 0, 1
VOCAB = 300
N_INTENSIFIERS, N_POLAR, N_AMBIGUOUS = 3, 15, 6  # N_POLAR positive words and as many negative
FILLER_S = 1.1  # filler words are Zipf-like too: a few frequent ones, a long tail
CUE = 3  # the first CUE audio / visual features carry the cue
# cue gains over N(0, 1) frames: audio tells a word's strength better than the lexicon does (its
# emphasis); visual tells the sign, weakly, so text stays the main modality
AUDIO_GAIN, VISUAL_GAIN = 3.0, 0.5


@dataclass(frozen=True)
class Lexicon:
    """The sentiment vocabulary: `polarity[w]` (0 for all but the positive and negative words),
    `scale[w]` (an intensifier's factor, 1 for the others), `ambiguous[w]` (a sentiment word whose
    polarity only the speaker's voice and face tell), and the ID of "not"."""

    polarity: np.ndarray
    scale: np.ndarray
    ambiguous: np.ndarray
    negation: int = NOT

    @property
    def sentiment(self) -> np.ndarray:
        """`(V,)` bool: the words that carry sentiment."""
        return (self.polarity != 0) | self.ambiguous

    def ids(self, kind: str) -> np.ndarray:
        """IDs of the `positive`, `negative`, `ambiguous`, `intensifier` or `filler` words."""
        other = ~self.sentiment & (self.scale == 1)
        other[[PAD, self.negation]] = False
        return np.flatnonzero({"positive": self.polarity > 0, "negative": self.polarity < 0,
                               "ambiguous": self.ambiguous, "intensifier": self.scale != 1,
                               "filler": other}[kind])


def make_lexicon(rng: np.random.Generator, vocab: int = VOCAB) -> Lexicon:
    """IDs 0 padding, 1 "not", then intensifiers, positive, negative and ambiguous words, the
    rest filler; polarities `±U(0.3, 1.2)`, intensifier factors `U(1.5, 2)`."""
    polarity, scale, ambiguous = np.zeros(vocab), np.ones(vocab), np.zeros(vocab, dtype=bool)
    start = NOT + 1
    scale[start : start + N_INTENSIFIERS] = rng.uniform(1.5, 2.0, N_INTENSIFIERS)
    start += N_INTENSIFIERS
    polarity[start : start + N_POLAR] = rng.uniform(0.3, 1.2, N_POLAR)
    polarity[start + N_POLAR : start + 2 * N_POLAR] = -rng.uniform(0.3, 1.2, N_POLAR)
    start += 2 * N_POLAR
    ambiguous[start : start + N_AMBIGUOUS] = True
    return Lexicon(polarity, scale, ambiguous)


def word_contributions(lex: Lexicon, tokens: Sequence[int], valence: Sequence[float] | None = None) -> np.ndarray:
    """What each word adds to the label, `(T,)`: a sentiment word's `valence` (default: its lexicon
    polarity) times the intensifiers since the previous sentiment word, negated by an odd number
    of "not" since then; every other word adds 0. Reading stops at the first padding."""
    tokens = np.asarray(tokens)
    valence = lex.polarity[tokens] if valence is None else np.asarray(valence, dtype=float)
    out, sign, boost = np.zeros(len(tokens)), 1.0, 1.0
    for t, word in enumerate(tokens):
        if word == PAD:
            break
        if word == lex.negation:
            sign = -sign
        boost *= lex.scale[word]
        if lex.sentiment[word]:
            out[t], sign, boost = sign * boost * valence[t], 1.0, 1.0
    return out


def sentence_score(lex: Lexicon, tokens: Sequence[int], valence: Sequence[float] | None = None) -> float:
    """The noiseless label of one sentence: the sum of `word_contributions`."""
    return float(word_contributions(lex, tokens, valence).sum())


def _phrase(rng: np.random.Generator, lex: Lexicon) -> tuple[list[int], float]:
    """A sentiment word, maybe after an intensifier and "not", and its valence as said."""
    if rng.random() < 0.2:
        word, strength = int(rng.choice(lex.ids("ambiguous"))), rng.choice([-1, 1]) * rng.uniform(0.3, 1.2)
    else:
        word = int(rng.choice(lex.ids("positive" if rng.random() < 0.5 else "negative")))
        strength = lex.polarity[word]
    prefix = [lex.negation] if rng.random() < 0.25 else []
    prefix += [int(rng.choice(lex.ids("intensifier")))] if rng.random() < 0.3 else []
    return [*prefix, word], float(strength * rng.uniform(0.5, 1.5))  # emphasis: as said, heard, seen


def _sentence(rng: np.random.Generator, lex: Lexicon, seq_len: int, min_len: int,
              filler: tuple[np.ndarray, np.ndarray]) -> tuple[list[int], list[float]]:
    """Tokens and per-word valence of one sentence: 0-3 sentiment phrases, maybe a stray "not"
    or intensifier, and filler words (`filler`: their IDs and probabilities), units in random order."""
    units = [_phrase(rng, lex) for _ in range(rng.choice(4, p=[0.1, 0.45, 0.3, 0.15]))]
    units += [([lex.negation], 0.0)] if rng.random() < 0.15 else []
    units += [([int(rng.choice(lex.ids("intensifier")))], 0.0)] if rng.random() < 0.1 else []
    need = sum(len(words) for words, _ in units)
    length = int(rng.integers(max(min_len, need), seq_len + 1))
    units += [([int(w)], 0.0) for w in rng.choice(filler[0], size=length - need, p=filler[1])]
    tokens, valence = [], []
    for i in rng.permutation(len(units)):
        words, said = units[i]
        tokens += words
        valence += [0.0] * (len(words) - 1) + [said]
    return tokens, valence


def sentiment_arrays(rng: np.random.Generator, n: int, d: int = 8, seq_len: int = 20, min_len: int = 5,
                     noise: float = 0.1) -> tuple[Arrays, np.ndarray, np.ndarray, dict]:
    """`({'text': (n, T) int64, 'audio', 'visual': (n, T, d)}, y (n,) in [-3, 3], lengths (n,), meta)`;
    `meta['lexicon']` is the `Lexicon`, `meta['contributions']` `(n, T)` each word's share of `y`,
    `meta['text_guess']` `(n,)` the best text-only guess (lexicon polarities, emphasis 1)."""
    lex = make_lexicon(rng)
    text, contrib, guess = np.zeros((n, seq_len), np.int64), np.zeros((n, seq_len)), np.zeros(n)
    lengths = np.zeros(n, np.int64)
    ids = lex.ids("filler")
    p = np.arange(1, len(ids) + 1) ** -FILLER_S
    for i in range(n):
        tokens, valence = _sentence(rng, lex, seq_len, min_len, (ids, p / p.sum()))
        lengths[i], text[i, : len(tokens)] = len(tokens), tokens
        contrib[i] = word_contributions(lex, text[i], np.pad(valence, (0, seq_len - len(tokens))))
        guess[i] = sentence_score(lex, text[i])  # text alone: lexicon polarities, mean emphasis 1
    y = np.clip(contrib.sum(axis=1) + noise * rng.standard_normal(n), -3.0, 3.0)
    valid = np.arange(seq_len)[None, :] < lengths[:, None]  # (n, T)
    xs: Arrays = {"text": text}
    for name, cue in (("audio", AUDIO_GAIN * np.abs(contrib)), ("visual", VISUAL_GAIN * contrib)):
        frames = rng.standard_normal((n, seq_len, d))
        frames[..., :CUE] += cue[..., None]
        xs[name] = frames * valid[..., None]  # padding: zeros
    return xs, y, lengths, {"lexicon": lex, "contributions": contrib, "text_guess": guess}


def r2(pred: np.ndarray, y: np.ndarray) -> float:
    """1 - SSE/SST."""
    return float(1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def _sentiment_finish(meta: dict, y: np.ndarray, splits: Sequence[np.ndarray]) -> dict:
    guess, test = meta.pop("text_guess"), splits[-1]
    contrib = meta.pop("contributions")
    return {**meta, "text_r2": r2(np.clip(guess[test], -3, 3), y[test]),
            "oracle_r2": r2(np.clip(contrib[test].sum(axis=1), -3, 3), y[test])}


# ---------------------------------------------------------------- the table load_planted reads
@dataclass(frozen=True)
class FieldTask:
    """A generated task on fields or tokens: `make(rng, n, cfg) -> (xs, y, lengths or None, meta)`,
    its task type and default sizes, the config keys it reads beyond sizes and seed, and
    `finish(meta, y, splits) -> meta` (the test-split summaries)."""

    make: Callable[[np.random.Generator, int, Mapping[str, Any]], tuple[Arrays, np.ndarray, np.ndarray | None, dict]]
    kind: str
    n_train: int
    n_test: int
    keys: tuple[str, ...]
    finish: Callable[[dict, np.ndarray, Sequence[np.ndarray]], dict]


def _make_ctr(rng: np.random.Generator, n: int, cfg: Mapping[str, Any]) -> tuple[Arrays, np.ndarray, None, dict]:
    xs, y, meta = ctr_arrays(rng, n, d=opt_int(cfg, "d", 16, 1), rank=opt_int(cfg, "rank", 4, 1),
                             positive=opt_float(cfg, "positive", 0.04, 0.001, 0.5))
    return xs, y, None, meta


def _make_sentiment(rng: np.random.Generator, n: int, cfg: Mapping[str, Any]) -> tuple[Arrays, np.ndarray, np.ndarray, dict]:
    seq_len, min_len = opt_int(cfg, "seq_len", 20, 11), opt_int(cfg, "min_len", 5, 1)
    if min_len > seq_len:
        raise DataError(f"data.min_len: {min_len} exceeds seq_len={seq_len}")
    return sentiment_arrays(rng, n, d=opt_int(cfg, "d", 8, CUE), seq_len=seq_len, min_len=min_len,
                            noise=opt_float(cfg, "noise", 0.1, 0.0, 10.0))


FIELD_TASKS: dict[str, FieldTask] = {
    "ctr": FieldTask(_make_ctr, "binary", 20000, 5000, ("d", "positive", "rank"), _ctr_finish),
    "sentiment": FieldTask(_make_sentiment, "regression", 2000, 600, ("d", "noise", "seq_len", "min_len"),
                           _sentiment_finish),
}
