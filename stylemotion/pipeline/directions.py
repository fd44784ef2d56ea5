"""One latent direction per emotion: one-vs-rest logistic regression on embedded latents (InterFaceGAN-style).

For each emotion: standardise the latents, fit a class-balanced logistic regression whose C is chosen by
cross-validation on the training split, measure accuracy on a held-out split, and take the unit normal of the
decision boundary in the *raw* latent space (the standardised coefficients divided by the feature scales).
Optional conditioning projects one direction off another (so "happy" need not also change what "neutral" does).

Directions file (DESIGN.md section 4): ``emotions [E]``, ``directions [E, D]`` (Z or W) or ``[E, num_ws, w_dim]``
(W+), ``space``, ``accuracy [E]`` (held-out), ``balanced_accuracy [E]``, ``counts [E]``.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .._optional import require
from ..atomic import atomic_path
from ..errors import ConfigError, InputError
from ..models.emotion_cnn import EMOTIONS

SPACES = ("z", "w", "w+")


@dataclass
class Directions:
    emotions: list[str]
    directions: np.ndarray  # [E, D] or [E, num_ws, w_dim], unit norm each
    space: str
    accuracy: np.ndarray  # [E] held-out accuracy of each one-vs-rest classifier
    balanced_accuracy: np.ndarray  # [E]
    counts: np.ndarray  # [E] samples of each emotion

    def __getitem__(self, emotion: str) -> np.ndarray:
        if emotion not in self.emotions:
            raise ConfigError(f"no direction for {emotion!r}; this file has {self.emotions}")
        return self.directions[self.emotions.index(emotion)]

    def save(self, path: str | os.PathLike) -> Path:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, emotions=np.array(self.emotions), directions=self.directions.astype(np.float32),
                         space=np.array(self.space), accuracy=self.accuracy, balanced_accuracy=self.balanced_accuracy,
                         counts=self.counts)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Directions":
        where = str(path)
        try:
            with np.load(where, allow_pickle=False) as d:
                return cls([str(e) for e in d["emotions"]], d["directions"], str(d["space"]), d["accuracy"],
                           d["balanced_accuracy"], d["counts"])
        except KeyError as exc:
            raise InputError(f"{where}: not a directions file (missing {exc.args[0]!r})") from exc
        except (OSError, ValueError) as exc:
            raise InputError(f"{where}: cannot read directions ({exc})") from exc


def emotion_id(value: str | int, *, where: str) -> int:
    """A FER-2013 id from an id or a name (case-insensitive)."""
    text = str(value).strip().lower()
    if text.isdigit() and int(text) < len(EMOTIONS):
        return int(text)
    if text in EMOTIONS:
        return EMOTIONS.index(text)
    raise InputError(f"{where}: unknown emotion {value!r} (use 0..{len(EMOTIONS) - 1} or {', '.join(EMOTIONS)})")


def same_source(path: str) -> str:
    """The form in which sources are compared: an absolute, normalised path (``./a.mp4`` == ``a.mp4``)."""
    return os.path.normpath(os.path.abspath(str(path)))


def labels_from_csv(path: str | os.PathLike, frame_index: np.ndarray, source: np.ndarray | None = None) -> np.ndarray:
    """Per-latent labels from a CSV ``frame_index,emotion`` (optional ``source`` column). Latents without a
    label get -1; a label for a frame that has no latent is an error (nothing silently dropped), and so is a
    CSV without ``source`` for latents of several sources (its frame numbers would be ambiguous)."""
    where = str(path)
    try:
        with open(where, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{where}: cannot read the labels CSV ({exc})") from exc
    if not rows or "frame_index" not in rows[0] or "emotion" not in rows[0]:
        raise InputError(f"{where}: expected a header 'frame_index,emotion' (and optionally 'source')")
    sources = [""] * len(frame_index) if source is None else [same_source(s) for s in source]
    keyed = source is not None and "source" in rows[0]
    if not keyed and len(set(sources)) > 1:
        raise InputError(f"{where}: the latents come from {len(set(sources))} sources; add a 'source' column")
    index = {((src if keyed else ""), int(i)): n for n, (i, src) in enumerate(zip(frame_index, sources))}
    labels = np.full(len(frame_index), -1, dtype=np.int64)
    for line, row in enumerate(rows, 2):
        try:
            frame = int(row["frame_index"])
            src = same_source(row["source"]) if keyed else ""
        except (TypeError, ValueError) as exc:
            raise InputError(f"{where}:{line}: bad row {row} ({exc})") from exc
        if (src, frame) not in index:
            raise InputError(f"{where}:{line}: frame {frame}{' of ' + row['source'] if keyed else ''} has no latent")
        labels[index[(src, frame)]] = emotion_id(row["emotion"], where=f"{where}:{line}")
    return labels


def labels_from_folders(source: np.ndarray) -> np.ndarray:
    """Folder-per-emotion datasets (``happy/img1.png``): the label is the parent folder's name."""
    return np.array([emotion_id(Path(str(s)).parent.name, where=str(s)) for s in source], dtype=np.int64)


def labels_from_sequences(path: str | os.PathLike, frame_index: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Labels from the labeler's JSON lines, matched on (source, frame index); faceless frames stay -1.

    A video's latents match its sequence by path; the latents of a folder of images (one source per image)
    match the folder's sequence by the image's position in the sorted folder, as both stages number them.
    """
    from .labeling import read_sequences

    seqs = read_sequences(path)
    lookup = {}
    for seq in seqs:
        for i, e in zip(seq.frame_index, seq.emotions):
            lookup[(same_source(seq.source), int(i))] = -1 if e is None else int(e)
    labels = []
    for s, i in zip(source, frame_index):
        src = same_source(s)
        key = (src, int(i)) if (src, int(i)) in lookup else (os.path.dirname(src), int(i))
        labels.append(lookup.get(key, -1))
    out = np.array(labels, dtype=np.int64)
    if len(out) and (out < 0).all():
        raise InputError(f"{path}: no latent matched a labelled frame (sources labelled: "
                         f"{sorted({q.source for q in seqs})[:3]}; sources embedded: {sorted(set(map(str, source)))[:3]})")
    return out


def learn_directions(latents: np.ndarray, labels: np.ndarray, *, space: str = "w",
                     emotions: Sequence[str] | None = None, test_size: float = 0.25, folds: int = 3,
                     seed: int = 0) -> Directions:
    """Fit one-vs-rest directions. ``latents [N, D]`` or ``[N, num_ws, w_dim]``; ``labels [N]`` ids, -1 unlabelled.

    Every emotion asked for (default: every emotion with a label) needs at least ``2 * folds`` samples and some
    negatives; otherwise InputError names it and its count.
    """
    sk_model = require("sklearn.linear_model", package="scikit-learn")
    sk_pre = require("sklearn.preprocessing", package="scikit-learn")
    sk_sel = require("sklearn.model_selection", package="scikit-learn")
    sk_pipe = require("sklearn.pipeline", package="scikit-learn")
    if space not in SPACES:
        raise ConfigError(f"space must be one of {SPACES}, got {space!r}")
    latents = np.asarray(latents, dtype=np.float64)
    labels = np.asarray(labels)
    if len(latents) != len(labels):
        raise InputError(f"{len(latents)} latents but {len(labels)} labels")
    if not 0 < test_size < 1:
        raise ConfigError(f"test_size must be in (0, 1), got {test_size}")
    keep = labels >= 0
    if not keep.any():
        raise InputError("no labelled latents: every label is -1 (unlabelled or faceless)")
    x, y = latents[keep].reshape(int(keep.sum()), -1), labels[keep]
    present = [EMOTIONS[i] for i in sorted(set(y.tolist()))]
    wanted = list(emotions) if emotions is not None else present
    counts = {e: int((y == EMOTIONS.index(e)).sum()) for e in wanted if e in EMOTIONS}
    unknown = [e for e in wanted if e not in EMOTIONS]
    if unknown:
        raise InputError(f"unknown emotions {unknown} (known: {', '.join(EMOTIONS)})")
    short = {e: n for e, n in counts.items() if n < 2 * folds or n > len(y) - 2 * folds}
    if short:
        raise InputError(f"too few samples (or no negatives) to learn a direction: {short} of {len(y)} labelled "
                         f"latents; each emotion needs at least {2 * folds} samples and {2 * folds} others")
    dirs, acc, bacc = [], [], []
    for e in wanted:
        target = (y == EMOTIONS.index(e)).astype(int)
        x_tr, x_te, y_tr, y_te = sk_sel.train_test_split(x, target, test_size=test_size, stratify=target,
                                                         random_state=seed)
        pipe = sk_pipe.make_pipeline(sk_pre.StandardScaler(),
                                     sk_model.LogisticRegression(class_weight="balanced", max_iter=2000))
        search = sk_sel.GridSearchCV(pipe, {"logisticregression__C": np.logspace(-4, 3, 8)}, cv=folds,
                                     scoring="neg_log_loss")
        search.fit(x_tr, y_tr)
        clf = search.best_estimator_
        scaler, logreg = clf[0], clf[1]
        pred = clf.predict(x_te)
        acc.append(float((pred == y_te).mean()))
        tpr = float((pred[y_te == 1] == 1).mean())
        tnr = float((pred[y_te == 0] == 0).mean())
        bacc.append((tpr + tnr) / 2)
        d = logreg.coef_[0] / scaler.scale_  # the boundary normal in the raw latent space
        dirs.append(d / np.linalg.norm(d))
    directions = np.stack(dirs).reshape((len(wanted),) + latents.shape[1:])
    return Directions(wanted, directions, space, np.array(acc), np.array(bacc),
                      np.array([counts[e] for e in wanted]))


def condition(directions: Directions, primary: str, against: str) -> np.ndarray:
    """InterFaceGAN's conditional direction: ``primary`` with its component along ``against`` removed, unit norm."""
    a, b = directions[primary].reshape(-1), directions[against].reshape(-1)
    b = b / np.linalg.norm(b)
    out = a - (a @ b) * b
    norm = np.linalg.norm(out)
    if norm < 1e-6:
        raise ConfigError(f"{primary!r} and {against!r} are parallel; nothing is left after conditioning")
    return (out / norm).reshape(directions[primary].shape)


def random_directions(w_dim: int, *, seed: int = 0) -> Directions:
    """Seeded random unit W directions for every emotion: for demos on models that have no learned ones.
    Their accuracy is NaN, and the CLI says they are random."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(len(EMOTIONS), w_dim))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    nan = np.full(len(EMOTIONS), np.nan)
    return Directions(list(EMOTIONS), d, "w", nan, nan, np.zeros(len(EMOTIONS), dtype=np.int64))
