"""Dataset loaders: shapes, seeded splits, train-only standardisation, planted structure, bad data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from search.datasets import DataError, load_dataset
from search.datasets.common import split_sizes, stratified_split
from search.datasets.planted import TASKS

SMALL = {"kind": "planted", "n_train": 1000, "n_test": 400, "d": 8, "seed": 3}
EXACT = {**SMALL, "noise": 0.0}  # structure tests: noiseless labels, so the right feature is perfect


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    # on 2 shared cores a multi-threaded BLAS makes each small sklearn fit ~100x slower
    with threadpool_limits(1):
        yield


def _acc(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray) -> float:
    return LogisticRegression(max_iter=1000).fit(train, y_train).score(test, y_test)


def _cat(part: dict[str, np.ndarray], names) -> np.ndarray:
    return np.concatenate([part[m].reshape(len(part[m]), -1) for m in names], axis=1)


# ---------------------------------------------------------------- splits
def test_stratified_split_exact_sizes_disjoint_and_proportional():
    y = np.repeat([0, 1, 2], [500, 300, 200])
    parts = stratified_split(y, split_sizes(len(y), (0.6, 0.2, 0.2)), np.random.default_rng(0))
    assert [len(p) for p in parts] == [600, 200, 200]
    assert len(np.unique(np.concatenate(parts))) == 1000
    for part in parts:
        expected = np.bincount(y) * len(part) / len(y)
        assert np.all(np.abs(np.bincount(y[part], minlength=3) - expected) <= 1)


# ---------------------------------------------------------------- planted
@pytest.mark.parametrize("task", sorted(set(TASKS) - {"regression", "imbalanced"}))
def test_planted_shapes_splits_and_balance(task):
    ds = load_dataset({**SMALL, "task": task})
    names = ("m1", "m2", "m3") if task == "parity3" else ("m1", "m2")
    assert ds.modalities == names and ds.shapes == {m: (8,) for m in names}
    assert [len(ds.y_train), len(ds.y_val), len(ds.y_test)] == [800, 200, 400]
    for split in ("train", "val", "test"):
        x, y = ds.split(split)
        assert all(x[m].dtype == np.float32 and x[m].shape == (len(y), 8) for m in names)
        assert y.dtype == np.int64 and y.min() >= 0 and y.max() < ds.num_classes
    assert ds.num_classes == (8 if task == "shift" else 2)
    share = np.bincount(ds.y_train, minlength=ds.num_classes) / len(ds.y_train)
    assert np.all(np.abs(share - 1 / ds.num_classes) < 0.06)
    assert np.allclose(ds.train["m1"].mean(0), 0, atol=1e-5) and np.allclose(ds.train["m1"].std(0), 1, atol=1e-3)


def test_planted_is_deterministic_by_seed():
    a, b = load_dataset({**SMALL, "task": "xor"}), load_dataset({**SMALL, "task": "xor"})
    c = load_dataset({**SMALL, "task": "xor", "seed": 4})
    assert np.array_equal(a.test["m2"], b.test["m2"]) and np.array_equal(a.y_val, b.y_val)
    assert not np.allclose(a.test["m2"][:50], c.test["m2"][:50])


def test_planted_n_val_overrides_fraction():
    ds = load_dataset({**SMALL, "task": "additive", "n_val": 123})
    assert (len(ds.y_train), len(ds.y_val)) == (877, 123)


def _projections(ds) -> dict[str, np.ndarray]:
    """Noiseless a_m per split `(N, M)`, from the planted unit vectors and the un-standardised inputs."""
    raw = {s: {m: ds.split(s)[0][m] * ds.std[m] + ds.mean[m] for m in ds.modalities} for s in ("train", "test")}
    return {s: np.stack([raw[s][m] @ ds.meta["u"][m] for m in ds.modalities], 1) for s in raw}


def test_xor_needs_multiplicative_fusion():
    ds = load_dataset({**EXACT, "task": "xor"})
    for names in (["m1"], ["m2"], ["m1", "m2"]):  # each alone and late/additive fusion: chance
        assert _acc(_cat(ds.train, names), ds.y_train, _cat(ds.test, names), ds.y_test) < 0.6
    a = _projections(ds)
    assert np.mean((a["test"].prod(1) > 0) == ds.y_test) > 0.999  # the planted rule, noiseless
    outer = {s: np.einsum("ni,nj->nij", ds.split(s)[0]["m1"], ds.split(s)[0]["m2"]).reshape(-1, 64) for s in a}
    assert _acc(outer["train"], ds.y_train, outer["test"], ds.y_test) > 0.85


def test_additive_is_solved_by_concatenation_not_by_one_modality():
    ds = load_dataset({**EXACT, "task": "additive"})
    cat = _acc(_cat(ds.train, ds.modalities), ds.y_train, _cat(ds.test, ds.modalities), ds.y_test)
    alone = _acc(ds.train["m1"], ds.y_train, ds.test["m1"], ds.y_test)
    assert cat > 0.93 and alone < 0.85


def test_bilinear_needs_pairwise_products():
    ds = load_dataset({**EXACT, "task": "bilinear"})
    assert _acc(_cat(ds.train, ds.modalities), ds.y_train, _cat(ds.test, ds.modalities), ds.y_test) < 0.6
    outer = {s: np.einsum("ni,nj->nij", ds.split(s)[0]["m1"], ds.split(s)[0]["m2"]).reshape(-1, 64)
             for s in ("train", "test")}
    assert _acc(outer["train"], ds.y_train, outer["test"], ds.y_test) > 0.85


def test_shift_class_is_the_circular_lag():
    ds = load_dataset({**EXACT, "task": "shift"})
    x1, x2 = ds.test["m1"], ds.test["m2"]
    xcorr = np.fft.ifft(np.conj(np.fft.fft(x1)) * np.fft.fft(x2)).real  # peak at lag k: x2 = roll(x1, k)
    assert np.mean(xcorr.argmax(1) == ds.y_test) > 0.95
    assert _acc(_cat(ds.train, ds.modalities), ds.y_train, _cat(ds.test, ds.modalities), ds.y_test) < 0.3


def test_redundant_each_modality_suffices():
    ds = load_dataset({**EXACT, "task": "redundant"})
    for m in ds.modalities:
        assert _acc(ds.train[m], ds.y_train, ds.test[m], ds.y_test) > 0.9


def test_parity3_needs_all_three():
    ds = load_dataset({**EXACT, "task": "parity3"})
    a = _projections(ds)
    pair = {s: a[s][:, :2].prod(1, keepdims=True) for s in a}  # two of three modalities: chance
    triple = {s: a[s].prod(1, keepdims=True) for s in a}
    assert _acc(pair["train"], ds.y_train, pair["test"], ds.y_test) < 0.6
    assert _acc(triple["train"], ds.y_train, triple["test"], ds.y_test) > 0.95
    assert np.mean((a["test"].prod(1) > 0) == ds.y_test) > 0.999


@pytest.mark.parametrize(("task", "noise"), [("xor", 0.3), ("parity3", 0.3), ("additive", 1.0)])
def test_noise_flips_each_modality_sign_alike(task, noise):
    """The noiseless rule agrees with noisy labels as often as theory says (q = P(sign of ã_m flips))."""
    ds = load_dataset({**SMALL, "task": task, "noise": noise, "n_train": 4000})
    a = _projections(ds)["train"]
    q = np.arctan(noise) / np.pi
    if task == "additive":  # ã_1 + ã_2 = s + N(0, 2 noise²) with s ~ N(0, 2)
        rule, expected = a.sum(1) > 0, 1 - np.arctan(noise) / np.pi
    else:  # the sign parity is right when an even number of signs flipped
        rule, expected = a.prod(1) > 0, 0.5 + 0.5 * (1 - 2 * q) ** a.shape[1]
    assert abs(np.mean(rule == ds.y_train) - expected) < 0.03


# ---------------------------------------------------------------- planted, sequence variant
SEQ = {**SMALL, "seq_len": 5}


@pytest.mark.parametrize("task", ["xor", "shift", "parity3"])
def test_planted_sequences_shapes_and_one_marked_frame(task):
    ds = load_dataset({**SEQ, "task": task, "normalize": "none"})
    names = ("m1", "m2", "m3") if task == "parity3" else ("m1", "m2")
    assert ds.modalities == names and ds.shapes == {m: (5, 9) for m in names}
    assert ds.meta["seq_len"] == 5
    for split in ("train", "val", "test"):
        x, y = ds.split(split)
        pos = ds.meta["positions"][split]
        assert pos.shape == y.shape and pos.min() == 0 and pos.max() == 4
        for m in names:
            assert x[m].dtype == np.float32 and x[m].shape == (len(y), 5, 9)
            marker = x[m][..., -1]
            assert np.array_equal(marker, (np.arange(5)[None, :] == pos[:, None]).astype(np.float32))


def test_planted_sequences_are_deterministic_by_seed():
    a, b = load_dataset({**SEQ, "task": "xor"}), load_dataset({**SEQ, "task": "xor"})
    c = load_dataset({**SEQ, "task": "xor", "seed": 4})
    assert np.array_equal(a.train["m1"], b.train["m1"]) and np.array_equal(a.meta["positions"]["test"],
                                                                              b.meta["positions"]["test"])
    assert not np.array_equal(a.meta["positions"]["test"], c.meta["positions"]["test"])
    assert not np.allclose(a.test["m2"][:50], c.test["m2"][:50])


@pytest.mark.parametrize("task", sorted(TASKS))
def test_planted_marked_frame_holds_the_vector_task_exactly(task):
    vec = load_dataset({**SMALL, "task": task, "normalize": "none"})
    seq = load_dataset({**SEQ, "task": task, "normalize": "none"})
    distractors = []
    for split in ("train", "val", "test"):
        (xv, yv), (xs, ys) = vec.split(split), seq.split(split)
        assert np.array_equal(yv, ys)
        rows, pos = np.arange(len(ys)), seq.meta["positions"][split]
        for m in vec.modalities:
            assert np.array_equal(xs[m][rows, pos, :-1], xv[m])  # same seed: the very same x_m
            others = np.ones(xs[m].shape[:2], bool)
            others[rows, pos] = False
            distractors.append(xs[m][others][:, :-1])
    frames = np.concatenate(distractors)  # N(0, I) frames: ~90k values, mean within 4 standard errors
    assert abs(frames.mean()) < 0.02 and abs(frames.std() - 1) < 0.02


def test_planted_sequence_labels_follow_the_rule_only_from_the_marked_frame():
    """The xor rule read off the marked frames is the label; read off any fixed frame it is chance."""
    ds = load_dataset({**SEQ, "task": "xor", "noise": 0.0})
    raw = {m: ds.test[m] * ds.std[m] + ds.mean[m] for m in ds.modalities}  # undo the standardisation
    rows, pos = np.arange(len(ds.y_test)), ds.meta["positions"]["test"]
    a = np.stack([raw[m][rows, pos, :-1] @ ds.meta["u"][m] for m in ds.modalities], 1)
    assert np.mean((a.prod(1) > 0) == ds.y_test) > 0.999
    elsewhere = pos != 0  # frame 0 of the samples whose x_m is hidden at another position
    fixed = np.stack([raw[m][elsewhere, 0, :-1] @ ds.meta["u"][m] for m in ds.modalities], 1)
    assert abs(np.mean((fixed.prod(1) > 0) == ds.y_test[elsewhere]) - 0.5) < 0.1


@pytest.mark.parametrize("value", [1, 0, 2.5, "8", True])
def test_planted_bad_seq_len_names_the_key(value):
    with pytest.raises(DataError, match=rf"^data\.seq_len: expected an integer >= 2, got {value!r}"):
        load_dataset({**SMALL, "task": "xor", "seq_len": value})


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"task": "xr"}, "data.task: unknown planted task 'xr'; known: additive, bilinear, ctr, imbalanced, parity3, redundant, regression, sentiment, shift, xor"),
        ({"task": "xor", "n_train": -3}, "data.n_train: expected an integer >= 2, got -3"),
        ({"task": "xor", "d": 2.5}, "data.d: expected an integer"),
        ({"task": "xor", "taks": 1}, "data.taks: unknown key for kind 'planted'"),
        ({"task": "shift", "d": 4}, "data.n_shifts: 8 shifts exceed d=4"),
        ({"task": "xor", "n_train": 10, "n_val": 10}, "data.n_val:"),
        ({"task": "xor", "normalize": "zscore"}, "data.normalize: unknown mode 'zscore'"),
    ],
)
def test_planted_config_errors_name_the_key(cfg, message):
    with pytest.raises(DataError, match="^" + message.replace("(", r"\(").replace("[", r"\[")):
        load_dataset({"kind": "planted", **cfg})


def test_unknown_kind_lists_known():
    with pytest.raises(DataError, match=r"data.kind: unknown dataset kind 'csv'; known: av_digits, avmnist, mfeat, npz, planted"):
        load_dataset({"kind": "csv"})


# ---------------------------------------------------------------- npz
def _write_npz(path: Path, n: int = 100, **override) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {"image": rng.normal(size=(n, 4, 3)), "audio": rng.normal(5.0, 2.0, size=(n, 6)), "y": np.arange(n) % 3}
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


def test_npz_seeded_stratified_split(tmp_path):
    raw = _write_npz(tmp_path / "d.npz", n=200)
    ds = load_dataset({"kind": "npz", "path": "d.npz", "seed": 1}, base_dir=tmp_path)
    assert ds.name == "d" and ds.modalities == ("audio", "image") and ds.shapes == {"audio": (6,), "image": (4, 3)}
    assert [len(ds.y_train), len(ds.y_val), len(ds.y_test)] == [120, 40, 40]
    assert np.abs(np.bincount(ds.y_val) - 40 / 3).max() <= 1
    again = load_dataset({"kind": "npz", "path": str(tmp_path / "d.npz"), "seed": 1})
    assert np.array_equal(ds.test["audio"], again.test["audio"])
    # standardisation fitted on train only, applied to every split
    assert np.allclose(ds.train["audio"].mean(0), 0, atol=1e-5) and not np.allclose(ds.test["audio"].mean(0), 0, atol=1e-3)
    assert np.allclose(ds.mean["audio"], 5.0, atol=0.5) and np.allclose(ds.std["audio"], 2.0, atol=0.5)
    restored = ds.test["audio"] * ds.std["audio"] + ds.mean["audio"]  # each test row is one raw row, undone
    assert np.abs(restored[:, None, :] - raw["audio"][None]).max(-1).min(1).max() < 1e-4
    assert len(load_dataset({"kind": "npz", "path": str(tmp_path / "d.npz"), "fractions": [0.5, 0.25, 0.25]}).y_test) == 50


@pytest.mark.parametrize("split", [np.arange(30) % 3, np.array(["train", "val", "test"] * 10)])
def test_npz_given_split_keeps_rows(tmp_path, split):
    raw = _write_npz(tmp_path / "d.npz", n=30, split=split, y=np.array([4, 7] * 15))
    ds = load_dataset({"kind": "npz", "path": str(tmp_path / "d.npz"), "normalize": "none"})
    assert np.allclose(ds.val["audio"], raw["audio"][1::3]) and ds.classes == (4, 7)
    assert np.array_equal(ds.y_val, (raw["y"][1::3] == 7).astype(np.int64))


@pytest.mark.parametrize("mode", ["feature", "modality"])
def test_standardisation_is_fitted_on_train_only(tmp_path, mode):
    split = np.arange(60) % 3
    audio = np.random.default_rng(1).normal(size=(60, 6)) + 100.0 * (split == 2)[:, None]  # test rows far off
    _write_npz(tmp_path / "d.npz", n=60, split=split, audio=audio)
    ds = load_dataset({"kind": "npz", "path": str(tmp_path / "d.npz"), "normalize": mode})
    train = audio[split == 0]
    axis = 0 if mode == "feature" else None
    assert np.allclose(ds.mean["audio"], train.mean(axis)) and np.allclose(ds.std["audio"], train.std(axis))
    assert np.allclose(ds.test["audio"], (audio[split == 2] - train.mean(axis)) / train.std(axis), atol=1e-4)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"audio": np.zeros((90, 6))}, "array 'audio' has 90 rows but 'y' has 100"),
        ({"y": np.array(["cat"] * 100)}, "'y' must be integer class labels"),  # floats are regression targets
        ({"y": np.full(100, 2)}, "'y' has only one class"),
        ({"image": np.where(np.arange(100)[:, None, None] == 7, np.nan, np.ones((100, 4, 3)))}, "array 'image' contains NaN"),
        ({"y": None}, "no array 'y'"),
        ({"split": np.full(100, 5)}, "array 'split' must hold 0/1/2 or train/val/test"),
        ({"split": np.zeros(100, dtype=int)}, "array 'split' has no 'val' rows"),
        ({"audio": np.array(["a"] * 100)}, "array 'audio' must be a numeric array"),
    ],
)
def test_npz_bad_data_names_file_and_array(tmp_path, override, message):
    path = tmp_path / "bad.npz"
    _write_npz(path, **override)
    with pytest.raises(DataError, match=str(path) + ": .*" + message.replace("(", r"\(")):
        load_dataset({"kind": "npz", "path": str(path)})


def test_npz_missing_or_unreadable_file(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path}/nope.npz: file not found"):
        load_dataset({"kind": "npz", "path": "nope.npz"}, base_dir=tmp_path)
    np.savez(tmp_path / "obj.npz", image=np.array([{"a": 1}] * 4, dtype=object), y=np.arange(4) % 2)
    with pytest.raises(DataError, match=f"{tmp_path}/obj.npz: array .image. holds Python objects"):  # never unpickle user data
        load_dataset({"kind": "npz", "path": str(tmp_path / "obj.npz")})


# ---------------------------------------------------------------- avmnist
def _write_avmnist(root: Path, n_train: int = 40, n_test: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    raw = {}
    for split, n in (("train", n_train), ("test", n_test)):
        raw[f"image_{split}"] = rng.integers(0, 256, size=(n, 784)).astype(np.float32)
        raw[f"audio_{split}"] = rng.random((n, 112, 112), dtype=np.float32)
        raw[f"y_{split}"] = np.arange(n) % 10
    for folder in ("image", "audio"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for split in ("train", "test"):
            np.save(root / folder / f"{split}_data.npy", raw[f"{folder}_{split}"])
    for split in ("train", "test"):
        np.save(root / f"{split}_labels.npy", raw[f"y_{split}"])
    return raw


def test_avmnist_layout_and_last_rows_are_val(tmp_path):
    raw = _write_avmnist(tmp_path / "avmnist")
    ds = load_dataset({"kind": "avmnist", "root": "avmnist", "n_val": 10}, base_dir=tmp_path)
    assert ds.shapes == {"audio": (112, 112), "image": (28, 28)} and ds.num_classes == 10
    assert [len(ds.y_train), len(ds.y_val), len(ds.y_test)] == [30, 10, 20]
    assert ds.mean["image"].shape == ()  # one scalar per modality by default
    val = ds.val["image"] * ds.std["image"] + ds.mean["image"]
    assert np.allclose(val, raw["image_train"][30:].reshape(10, 28, 28), atol=1e-2)
    assert np.array_equal(ds.y_test, raw["y_test"])
    assert np.array_equal(np.load(tmp_path / "avmnist/image/train_data.npy"), raw["image_train"])  # memmap untouched


def test_avmnist_bad_files(tmp_path):
    root = tmp_path / "av"
    _write_avmnist(root)
    np.save(root / "audio/test_data.npy", np.zeros((19, 112, 112), np.float32))
    with pytest.raises(DataError, match=r"audio/test_data.npy: array 'audio' has 19 rows but test_labels.npy has 20"):
        load_dataset({"kind": "avmnist", "root": str(root), "n_val": 10})
    (root / "train_labels.npy").unlink()
    with pytest.raises(DataError, match=r"train_labels.npy: file not found"):
        load_dataset({"kind": "avmnist", "root": str(root), "n_val": 10})
    with pytest.raises(DataError, match=r"data.n_val: 5000 validation rows leave none"):
        _write_avmnist(root)
        load_dataset({"kind": "avmnist", "root": str(root)})


# ---------------------------------------------------------------- mfeat
WIDTHS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}


def test_mfeat_views_shapes_and_stratification():
    ds = load_dataset({"kind": "mfeat", "views": list(WIDTHS), "seed": 0})
    assert ds.shapes == {v: (w,) for v, w in WIDTHS.items()}
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 2000
    for y, per_class in ((ds.y_train, 120), (ds.y_val, 40), (ds.y_test, 40)):
        assert np.array_equal(np.bincount(y), np.full(10, per_class))
    assert load_dataset({"kind": "mfeat"}).modalities == ("fou", "mor", "zer")


def test_mfeat_views_are_complementary():
    ds = load_dataset({"kind": "mfeat", "seed": 0})
    single = {v: _acc(ds.train[v], ds.y_train, ds.test[v], ds.y_test) for v in ds.modalities}
    both = _acc(_cat(ds.train, ds.modalities), ds.y_train, _cat(ds.test, ds.modalities), ds.y_test)
    assert all(0.65 < a < 0.92 for a in single.values()), single  # measured seed 0: fou .84, zer .835, mor .77
    assert both > max(single.values()) + 0.03 and both > 0.86, both  # measured .90


def test_mfeat_bad_views_and_files(tmp_path):
    with pytest.raises(DataError, match=r"data.views\[1\]: unknown mfeat view 'foo'; known: fou, fac, kar, pix, zer, mor"):
        load_dataset({"kind": "mfeat", "views": ["fou", "foo"]})
    header = ",".join(map(str, range(3))) + ",0\n"
    (tmp_path / "mfeat-fou.csv").write_text(header + "1,2,3,0\n4,5,6,1\n")
    (tmp_path / "mfeat-zer.csv").write_text(header + "1,2,3,1\n4,5,6,0\n")
    with pytest.raises(DataError, match=r"mfeat-zer.csv: labels \(last column\) differ from those of mfeat-fou.csv"):
        load_dataset({"kind": "mfeat", "root": str(tmp_path), "views": ["fou", "zer"]})
    with pytest.raises(DataError, match=r"mfeat-mor.csv: file not found"):
        load_dataset({"kind": "mfeat", "root": str(tmp_path), "views": ["fou", "mor"]})


# ---------------------------------------------------------------- av_digits
def test_av_digits_shipped_file_loads_with_its_split():
    ds = load_dataset({"kind": "av_digits"})
    assert ds.modalities == ("audio", "image") or list(ds.modalities) == ["audio", "image"]
    assert ds.shapes["image"] == (8, 8) and ds.shapes["audio"][0] > 1
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (1078, 359, 360)
    assert ds.num_classes == 10
    assert all(np.isfinite(x).all() for x in ds.train.values())


def test_av_digits_missing_array_is_named(tmp_path):
    path = tmp_path / "av.npz"
    np.savez(path, image=np.zeros((4, 8, 8)), y=np.arange(4) % 2, split=np.array([0, 0, 1, 2]))
    with pytest.raises(DataError, match=r"av\.npz: no array 'audio'"):
        load_dataset({"kind": "av_digits", "path": str(path)})


def test_planted_regression_is_float_targets_standardised_on_train():
    ds = load_dataset({**SMALL, "task": "regression"})
    assert ds.task == "regression" and ds.num_classes == 1 and ds.classes == ()
    assert ds.y_train.dtype == np.float32 and ds.y_train.shape == (800, 1)
    assert abs(ds.y_train.mean()) < 1e-5 and abs(ds.y_train.std() - 1) < 1e-4
    mean, std = ds.target_scale
    raw = ds.y_train[:, 0] * std[0] + mean[0]
    assert len(np.unique(raw)) == len(raw)  # continuous, not classes


def test_planted_imbalanced_is_binary_with_the_asked_share_of_positives():
    ds = load_dataset({**SMALL, "task": "imbalanced", "positive": 0.1})
    assert ds.task == "binary" and ds.num_classes == 2
    for y in (ds.y_train, ds.y_val, ds.y_test):  # stratified: every split has its 10 %
        assert abs(y.mean() - 0.1) < 0.01


@pytest.mark.parametrize(("y", "task"), [
    (np.arange(60) % 3, "classification"),
    (np.arange(60) % 3 + 0.5, "regression"),
    (np.stack([np.arange(60) % 2, np.arange(60) // 30], axis=1), "multilabel"),
    (np.random.default_rng(0).normal(size=(60, 2)), "regression"),
])
def test_npz_takes_float_and_2d_labels_and_infers_the_task(tmp_path, y, task):
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(1)
    np.savez(path, a=rng.normal(size=(60, 3)), b=rng.normal(size=(60, 2)), y=y)
    ds = load_dataset({"kind": "npz", "path": str(path)})
    assert ds.task == task
    assert ds.num_classes == (3 if task == "classification" else 1 if y.ndim == 1 else 2)
    assert ds.y_train.dtype == (np.int64 if task == "classification" else np.float32)


def test_npz_task_override_and_its_errors(tmp_path):
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(1)
    np.savez(path, a=rng.normal(size=(60, 3)), b=rng.normal(size=(60, 2)), y=np.arange(60) % 2)
    assert load_dataset({"kind": "npz", "path": str(path), "task": "binary"}).task == "binary"
    assert load_dataset({"kind": "npz", "path": str(path), "task": "regression"}).task == "regression"
    with pytest.raises(DataError, match="data.task: unknown task 'ranking'; known: classification, binary"):
        load_dataset({"kind": "npz", "path": str(path), "task": "ranking"})
    np.savez(path, a=rng.normal(size=(60, 3)), b=rng.normal(size=(60, 2)), y=np.arange(60) % 3)
    with pytest.raises(DataError, match="a binary task needs exactly 2 classes"):
        load_dataset({"kind": "npz", "path": str(path), "task": "binary"})
