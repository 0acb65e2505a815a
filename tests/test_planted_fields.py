"""The planted field tasks: `ctr` (categorical fields, a rare click) and `sentiment` (tokens with
negation, aligned audio and visual frames), checked on their raw arrays and through `load_dataset`."""
from __future__ import annotations

import numpy as np
import pytest

from search.datasets import DataError, load_dataset
from search.datasets.planted_fields import (
    AUDIO_GAIN,
    CARDINALITIES,
    CUE,
    VISUAL_GAIN,
    ctr_arrays,
    make_lexicon,
    rank_auc,
    sentence_score,
    sentiment_arrays,
    word_contributions,
)
from search.training.tasks import auc


@pytest.fixture(scope="module")
def ctr():
    return ctr_arrays(np.random.default_rng(0), 25000)


@pytest.fixture(scope="module")
def sentiment():
    return sentiment_arrays(np.random.default_rng(0), 2600)


def r2(pred: np.ndarray, y: np.ndarray) -> float:
    return 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)


# ---------------------------------------------------------------- ctr
def test_ctr_arrays_are_raw_ids_within_each_fields_cardinality(ctr):
    xs, y, _ = ctr
    assert set(xs) == {"fields", "item"}
    assert xs["fields"].shape == (25000, len(CARDINALITIES)) and xs["fields"].dtype == np.int64
    assert xs["item"].shape == (25000, 16) and xs["item"].dtype == np.float64
    assert y.dtype == np.int64 and set(np.unique(y)) == {0, 1}
    assert xs["fields"].min() >= 0
    for f, card in enumerate(CARDINALITIES):
        ids = xs["fields"][:, f]
        assert ids.max() < card and len(np.unique(ids)) <= card
    assert len(np.unique(xs["fields"][:, 0])) == 10  # the small fields show all their IDs
    assert len(np.unique(xs["fields"][:, -1])) > 2000  # the large one a long tail


def test_ctr_ids_are_zipf_and_their_values_say_nothing_of_their_rank(ctr):
    fields = ctr[0]["fields"]
    counts = np.bincount(fields[:, -1], minlength=CARDINALITIES[-1])
    ranked = np.sort(counts)[::-1]
    assert ranked[0] > 100 * max(1, np.median(counts[counts > 0]))
    ranks = np.arange(1, 101)  # the head's rank-frequency slope, log-log: -s = -1.1
    slope = np.polyfit(np.log(ranks), np.log(ranked[:100]), 1)[0]
    assert -1.35 < slope < -0.85, slope
    tops = [np.bincount(fields[:, f]).argmax() for f in range(len(CARDINALITIES))]
    assert sum(t == 0 for t in tops) <= 1  # unpermuted, the most frequent ID would be 0 in every field


def test_ctr_clicks_are_bernoulli_of_the_logit_at_the_planted_rate(ctr):
    _, y, meta = ctr
    logit = meta["logit"]
    p = 1 / (1 + np.exp(-logit))
    assert abs(p.mean() - 0.04) < 1e-6  # the bias solves mean(sigmoid) = positive
    assert abs(y.mean() - 0.04) < 0.01
    edges = np.quantile(logit, [0, 0.5, 0.9, 0.99, 1])
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):  # calibrated in each band of the logit
        band = (logit >= lo) & (logit <= hi)
        se = np.sqrt(p[band].mean() / band.sum())
        assert abs(y[band].mean() - p[band].mean()) < 4 * se + 1e-3
    assert 0.75 < rank_auc(logit, y == 1) < 0.85


def test_ctr_positive_rate_follows_the_config():
    _, y, _ = ctr_arrays(np.random.default_rng(1), 20000, positive=0.1)
    assert abs(y.mean() - 0.1) < 0.01


def test_rank_auc_matches_the_task_metric_with_ties():
    rng = np.random.default_rng(3)
    scores, positive = rng.integers(0, 5, 200).astype(float), rng.random(200) < 0.3
    assert rank_auc(scores, positive) == pytest.approx(auc(scores, positive))


def test_ctr_is_reproducible_by_seed_and_differs_with_another():
    a, b, c = (ctr_arrays(np.random.default_rng(s), 3000) for s in (5, 5, 6))
    assert all(np.array_equal(a[0][m], b[0][m]) for m in a[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0]["fields"], c[0]["fields"]) and not np.allclose(a[0]["item"], c[0]["item"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ctr_through_the_loader_keeps_the_oracle_auc_of_the_test_split(seed):
    ds = load_dataset({"kind": "planted", "task": "ctr", "seed": seed})
    assert ds.task == "binary" and ds.modalities == ("fields", "item")
    assert [len(ds.y_train), len(ds.y_val), len(ds.y_test)] == [16000, 4000, 5000]
    assert 0.75 < ds.meta["oracle_auc"] < 0.85
    assert ds.meta["oracle_auc"] == pytest.approx(auc(ds.meta["logit"]["test"], ds.y_test == 1))
    assert all(abs(y.mean() - 0.04) < 0.01 for y in (ds.y_train, ds.y_val, ds.y_test))


# ---------------------------------------------------------------- sentiment: the label function
def test_negation_flips_the_next_sentiment_word_and_order_matters():
    lex = make_lexicon(np.random.default_rng(0))
    good, bad = lex.ids("positive")[0], lex.ids("negative")[0]
    very, filler, no = lex.ids("intensifier")[0], lex.ids("filler")[0], lex.negation
    assert sentence_score(lex, [good]) == pytest.approx(lex.polarity[good]) and lex.polarity[good] > 0
    assert sentence_score(lex, [no, good]) == pytest.approx(-lex.polarity[good])
    assert sentence_score(lex, [good, no]) == pytest.approx(lex.polarity[good])  # "good not": nothing follows
    assert sentence_score(lex, [no, no, good]) == pytest.approx(lex.polarity[good])
    assert sentence_score(lex, [no, filler, bad, good]) == pytest.approx(-lex.polarity[bad] + lex.polarity[good])
    assert sentence_score(lex, [very, good]) == pytest.approx(lex.scale[very] * lex.polarity[good])
    assert 1.5 <= lex.scale[very] <= 2.0
    assert sentence_score(lex, [good, 0, no, good]) == pytest.approx(lex.polarity[good])  # padding ends it
    vague = lex.ids("ambiguous")[0]
    assert sentence_score(lex, [vague]) == 0.0 and sentence_score(lex, [no, vague], [0.0, 0.7]) == pytest.approx(-0.7)


# ---------------------------------------------------------------- sentiment: the arrays
def test_sentiment_shapes_labels_and_padding(sentiment):
    xs, y, lengths, _ = sentiment
    assert xs["text"].shape == (2600, 20) and xs["text"].dtype == np.int64
    assert xs["audio"].shape == xs["visual"].shape == (2600, 20, 8)
    assert y.dtype == np.float64 and y.min() >= -3 and y.max() <= 3 and y.min() == -3 and y.max() == 3
    assert lengths.dtype == np.int64 and lengths.min() >= 5 and lengths.max() == 20
    past = np.arange(20)[None, :] >= lengths[:, None]
    assert np.all(xs["text"][past] == 0) and np.all(xs["text"][~past] > 0)  # padding trailing, only there
    for m in ("audio", "visual"):
        assert np.all(xs[m][past] == 0) and np.all(xs[m][~past] != 0)


def test_sentiment_labels_are_the_clipped_sum_of_the_word_contributions():
    xs, y, _, meta = sentiment_arrays(np.random.default_rng(4), 400, noise=0.0)
    lex, contrib = meta["lexicon"], meta["contributions"]
    assert np.array_equal(y, np.clip(contrib.sum(axis=1), -3, 3))
    sentiment_word = lex.sentiment[xs["text"]]
    assert np.all((contrib != 0) == sentiment_word)  # each sentiment word adds, nothing else does
    same_sign = [np.sign(word_contributions(lex, row)) for row in xs["text"]]  # text knows the non-ambiguous signs
    known = sentiment_word & ~lex.ambiguous[xs["text"]]
    assert np.array_equal(np.stack(same_sign)[known], np.sign(contrib[known]))


def test_the_audio_and_visual_cue_sits_at_the_sentiment_words(sentiment):
    xs, _, lengths, meta = sentiment
    contrib = meta["contributions"]
    valid = np.arange(20)[None, :] < lengths[:, None]
    words = contrib != 0
    audio, visual = xs["audio"][..., :CUE].mean(-1), xs["visual"][..., :CUE].mean(-1)  # (n, T)
    for cue, expected in ((audio, AUDIO_GAIN * np.abs(contrib)), (visual, VISUAL_GAIN * contrib)):
        rest = cue[words] - expected[words]  # the cue plus N(0, 1/3) noise at each word
        assert abs(rest.mean()) < 0.03 and abs(rest.std() - 1 / np.sqrt(CUE)) < 0.03
        other = cue[valid & ~words]  # elsewhere noise only
        assert abs(other.mean()) < 0.02 and abs(other.std() - 1 / np.sqrt(CUE)) < 0.02
    assert np.corrcoef(visual[words], contrib[words])[0, 1] > 0.4
    assert abs(xs["audio"][..., CUE:][valid].mean()) < 0.01  # the other features: noise


def test_text_carries_most_and_audio_visual_add_what_text_cannot_tell(sentiment):
    """Hand-made guesses: text alone (lexicon polarities), audio-visual alone (words found by
    their audio peak, signed by visual), and a fusion (text's signs, audio's strength, visual's
    sign of the ambiguous words). Fusion beats text, which beats audio-visual."""
    xs, y, _, meta = sentiment
    lex, text = meta["lexicon"], xs["text"]
    text_only = np.stack([word_contributions(lex, row) for row in text])  # lexicon polarities, emphasis 1
    strength = xs["audio"][..., :CUE].mean(-1) / AUDIO_GAIN
    seen = np.sign(xs["visual"][..., :CUE].mean(-1))
    fused = np.where(lex.sentiment[text], np.where(lex.ambiguous[text], seen, np.sign(text_only)) * strength, 0.0)
    heard = np.where(strength > 0.5, seen * strength, 0.0).sum(1)  # a peak 2.6 noise sd above 0
    av_r2 = r2(np.clip(np.polyval(np.polyfit(heard, y, 1), heard), -3, 3), y)
    text_r2, fused_r2 = r2(np.clip(text_only.sum(1), -3, 3), y), r2(np.clip(fused.sum(1), -3, 3), y)
    assert 0.6 < text_r2 < 0.85 and fused_r2 > text_r2 + 0.08 and av_r2 < text_r2 - 0.1, (text_r2, fused_r2, av_r2)


def test_sentiment_is_reproducible_by_seed():
    a, b, c = (sentiment_arrays(np.random.default_rng(s), 300) for s in (7, 7, 8))
    assert all(np.array_equal(a[0][m], b[0][m]) for m in a[0]) and np.array_equal(a[1], b[1])
    assert np.array_equal(a[2], b[2]) and not np.array_equal(a[0]["text"], c[0]["text"])


def test_sentiment_through_the_loader():
    ds = load_dataset({"kind": "planted", "task": "sentiment", "seed": 1})
    assert ds.task == "regression" and ds.modalities == ("audio", "text", "visual")
    assert [len(ds.y_train), len(ds.y_val), len(ds.y_test)] == [1600, 400, 600]
    assert {"audio", "visual"} <= set(ds.lengths_of("test"))
    n = ds.lengths_of("test")["audio"]
    assert np.all(ds.test["visual"][np.arange(20)[None, :] >= n[:, None]] == 0)
    assert 0.6 < ds.meta["text_r2"] < 0.85 and ds.meta["oracle_r2"] > 0.98
    short = load_dataset({"kind": "planted", "task": "sentiment", "n_train": 200, "n_test": 100, "seq_len": 12,
                          "d": 4, "noise": 0.0})
    assert short.shapes["audio"] == (12, 4) and short.meta["oracle_r2"] == pytest.approx(1.0)


@pytest.mark.parametrize(("data", "message"), [
    ({"task": "ctr", "seq_len": 8}, "data.seq_len: not read by planted task 'ctr'; it reads"),
    ({"task": "sentiment", "positive": 0.2}, "data.positive: not read by planted task 'sentiment'"),
    ({"task": "sentiment", "seq_len": 6}, "data.seq_len: expected an integer >= 11"),
    ({"task": "sentiment", "min_len": 30}, "data.min_len: 30 exceeds seq_len=20"),
    ({"task": "clicks"}, "data.task: unknown planted task 'clicks'; known: additive, bilinear, ctr"),
])
def test_a_key_the_task_does_not_read_is_one_line(data, message):
    with pytest.raises(DataError, match="^" + message.replace("(", r"\(").replace(")", r"\)")) as err:
        load_dataset({"kind": "planted", **data})
    assert "\n" not in str(err.value)
