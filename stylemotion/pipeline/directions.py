"""One latent direction per emotion: one-vs-rest logistic regression on embedded latents (InterFaceGAN-style).

For each emotion: standardise the latents, fit a class-balanced logistic regression whose C is chosen by
cross-validation on the training split, measure accuracy on a held-out split, and take the unit normal of the
decision boundary in the *raw* latent space (the standardised coefficients divided by the feature scales).
Optional conditioning projects one direction off another (so "happy" need not also change what "neutral" does).

Directions file (DESIGN.md section 4): ``emotions [E]``, ``directions [E, D]`` (Z or W) or ``[E, num_ws, w_dim]``
(W+), ``space``; optional metadata ``accuracy [E]`` (held-out), ``balanced_accuracy [E]``, ``counts [E]``. Also
read: InterFaceGAN boundary ``.npy`` files (one per emotion) and stylegan-web ``latent_directions`` folders
(``load_directions``).
"""
from __future__ import annotations

import csv
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .._optional import require
from ..atomic import atomic_path
from ..errors import ConfigError, InputError
from ..npzfile import read_npz
from ..models.emotion_cnn import EMOTIONS

SPACES = ("z", "w", "w+")


@dataclass
class Directions:
    """One latent direction per emotion. Only ``emotions``, ``directions`` and ``space`` are required; the rest
    is optional metadata of learned directions (None when unknown, e.g. for imported InterFaceGAN boundaries).

    Vectors are used as given: ``learn_directions`` writes unit vectors; imported files keep their own scale, so
    a keyframe's coefficient multiplies exactly the vector in the file.
    """

    emotions: list[str]
    directions: np.ndarray  # [E, D] (Z or W) or [E, num_ws, w_dim] (W+)
    space: str
    accuracy: np.ndarray | None = None  # [E] held-out accuracy of each one-vs-rest classifier
    balanced_accuracy: np.ndarray | None = None  # [E]
    counts: np.ndarray | None = None  # [E] samples of each emotion
    source: str = ""  # where the directions came from (a file, a folder, boundaries), for messages

    def __post_init__(self) -> None:
        where = self.source or "directions"
        if self.space not in SPACES:
            raise InputError(f"{where}: space must be one of {SPACES}, got {self.space!r}")
        self.directions = np.asarray(self.directions)
        if not np.issubdtype(self.directions.dtype, np.floating):
            raise InputError(f"{where}: 'directions' must hold floats, got {self.directions.dtype}")
        want_ndim = 3 if self.space == "w+" else 2
        if self.directions.ndim != want_ndim or self.directions.shape[0] != len(self.emotions):
            layout = "[E, num_ws, w_dim]" if self.space == "w+" else "[E, dim]"
            raise InputError(f"{where}: 'directions' has shape {list(self.directions.shape)}; {len(self.emotions)} "
                             f"emotions in space {self.space!r} need {layout} with E = {len(self.emotions)}")
        if len(set(self.emotions)) != len(self.emotions):
            raise InputError(f"{where}: emotions repeat: {self.emotions}")
        if not np.isfinite(self.directions).all():
            bad = sorted({self.emotions[i] for i in np.argwhere(~np.isfinite(self.directions))[:, 0]})
            raise InputError(f"{where}: the directions of {bad} hold NaN or infinite values")
        for name in ("accuracy", "balanced_accuracy", "counts"):
            value = getattr(self, name)
            if value is not None and np.shape(value) != (len(self.emotions),):
                raise InputError(f"{where}: {name!r} has shape {list(np.shape(value))}, expected "
                                 f"[{len(self.emotions)}] (one per emotion)")

    def __getitem__(self, emotion: str) -> np.ndarray:
        if emotion not in self.emotions:
            raise ConfigError(f"no direction for {emotion!r}; {self.source or 'the directions'} has "
                              f"{self.emotions}")
        return self.directions[self.emotions.index(emotion)]

    def emotion(self, value: str | int, *, where: str) -> str:
        """The emotion a user named (a name or a FER-2013 id, any case), if these directions hold it; otherwise a
        ConfigError naming ``where`` and listing the emotions they do hold."""
        text = str(value).strip().lower()
        name = EMOTIONS[int(text)] if text.isdigit() and int(text) < len(EMOTIONS) else text
        if name in self.emotions:
            return name
        held = ", ".join(self.emotions)
        what = f"no direction for {name!r}" if name in EMOTIONS else f"unknown emotion {value!r}"
        holder = f"the directions ({self.source})" if self.source else "the directions"
        raise ConfigError(f"{where}: {what}; {holder} hold {held}")

    def in_space(self, space: str | None) -> Directions:
        """These directions for use in ``space`` (None: as they are). A W direction applies in W+ as it is: it moves
        every ws row alike, which is its W+ form, so W directions are returned unchanged; W+ directions whose rows
        are all equal are W directions; any other change of space is a ConfigError naming the file."""
        if space is None or space == self.space:
            return self
        if space not in SPACES:
            raise ConfigError(f"space must be one of {SPACES}, got {space!r}")
        where = self.source or "the directions"
        if self.space == "w" and space == "w+":
            return self
        if self.space == "w+" and space == "w":
            if not np.allclose(self.directions, self.directions[:, :1]):
                raise ConfigError(f"{where} holds W+ directions whose rows differ; they cannot be used in W "
                                  f"(use --space w+, or leave --space out)")
            return dataclasses.replace(self, directions=self.directions[:, 0].copy(), space="w")
        raise ConfigError(f"{where} holds {self.space!r} directions, but --space {space} was asked (a direction "
                          f"learned in one of Z and W does not apply in the other)")

    def save(self, path: str | os.PathLike) -> Path:
        extra = {name: getattr(self, name) for name in ("accuracy", "balanced_accuracy", "counts")
                 if getattr(self, name) is not None}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, emotions=np.array(self.emotions), directions=self.directions.astype(np.float32),
                         space=np.array(self.space), **extra)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Directions":
        """A directions ``.npz``: ``emotions``, ``directions``, ``space`` required; ``accuracy``,
        ``balanced_accuracy``, ``counts`` read when present; other keys are ignored."""
        where = str(path)
        d = read_npz(where, what="directions (a .npz archive; InterFaceGAN boundary .npy files go as "
                                "EMOTION=FILE.npy,...)")
        missing = [k for k in ("emotions", "directions", "space") if k not in d]
        if missing:
            raise InputError(f"{where}: not a directions file (missing {', '.join(map(repr, missing))}; "
                             f"it has {sorted(d)})")
        emotions = [_canonical_emotion(str(e), where=f"{where}: 'emotions'") for e in d["emotions"].reshape(-1)]
        meta = {k: d[k] for k in ("accuracy", "balanced_accuracy", "counts") if k in d}
        directions, space = d["directions"], str(d["space"])
        return cls(emotions, directions, space, source=where, **meta)

    @classmethod
    def from_boundaries(cls, boundaries: Mapping[str, str | os.PathLike | np.ndarray], *,
                        space: str | None = None) -> "Directions":
        """Directions from one vector per emotion: InterFaceGAN boundary ``.npy`` files (or arrays).

        Each is ``[w_dim]``, ``[1, w_dim]`` or ``[num_ws, w_dim]``. ``space`` defaults to ``'w'`` for vectors
        and ``'w+'`` when any is ``[num_ws, w_dim]`` (vectors are then repeated on every ws row, which is the
        same edit); ``'w+'`` asked for vectors alone gives W directions (they apply to every ws row). Asking for
        ``'z'`` or ``'w'`` with per-row directions whose rows differ is an error.
        """
        if not boundaries:
            raise InputError("no boundaries given (expected EMOTION=FILE.npy pairs)")
        emotions, arrays, wheres = [], [], []
        for name, value in boundaries.items():
            where = str(value) if not isinstance(value, np.ndarray) else f"the {name!r} boundary"
            emotions.append(_canonical_emotion(name, where=where))
            arrays.append(_read_vector(value, where=where))
            wheres.append(where)
        if len(set(emotions)) != len(emotions):
            raise InputError(f"an emotion is given twice: {list(boundaries)}")
        per_row = [a.ndim == 2 and a.shape[0] > 1 for a in arrays]
        if space is None:
            space = "w+" if any(per_row) else "w"
        if space not in SPACES:
            raise ConfigError(f"space must be one of {SPACES}, got {space!r}")
        if space == "w+" and not any(per_row):
            space = "w"  # W vectors are the W+ edit that moves every row alike
        out = []
        if space == "w+":
            rows = {a.shape[0] for a, pr in zip(arrays, per_row) if pr}
            if len(rows) > 1:
                raise InputError(f"the W+ boundaries have different numbers of rows: "
                                 f"{ {w: list(a.shape) for w, a in zip(wheres, arrays)} }")
            num_ws = rows.pop() if rows else 1
            for a, pr in zip(arrays, per_row):
                out.append(a if pr else np.repeat(a.reshape(1, -1), num_ws, axis=0))
        else:
            for a, pr, where in zip(arrays, per_row, wheres):
                if pr and not np.allclose(a, a[:1]):
                    raise InputError(f"{where}: a [{a.shape[0]}, {a.shape[1]}] W+ direction whose rows differ "
                                     f"cannot be used in space {space!r}; use --space w+")
                out.append(a.reshape(-1, a.shape[-1])[0])
        dims = {o.shape for o in out}
        if len(dims) > 1:
            raise InputError("the boundaries have different shapes: "
                             + ", ".join(f"{w} {list(a.shape)}" for w, a in zip(wheres, arrays)))
        source = ",".join(f"{e}={w}" for e, w in zip(emotions, wheres))
        return cls(emotions, np.stack(out).astype(np.float32), space, source=source)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, *, space: str | None = None) -> "Directions":
        """A folder of per-emotion ``.npy`` directions, as stylegan-web and its forks share them
        (``latent_directions/emotion_happy.npy``, ``[18, 512]`` W+ for FFHQ 1024), or named ``happy.npy``.
        Files that name no FER-2013 emotion (``age.npy``, ``emotion_easy.npy``) are not used."""
        root = Path(folder)
        if not root.is_dir():
            raise InputError(f"{root}: not a folder of directions")
        found: dict[str, Path] = {}
        for path in sorted(root.glob("*.npy")):
            stem = path.stem.lower()
            name = stem[len("emotion_"):] if stem.startswith("emotion_") else stem
            if name not in EMOTIONS:
                continue
            if name in found:
                raise InputError(f"{root}: both {found[name].name} and {path.name} give {name!r}; keep one")
            found[name] = path
        if not found:
            present = sorted(p.name for p in root.iterdir())[:12]
            raise InputError(f"{root}: no emotion directions found (expected emotion_<name>.npy or <name>.npy for "
                             f"{', '.join(EMOTIONS)}; the folder has {present})")
        dirs = cls.from_boundaries({e: found[e] for e in EMOTIONS if e in found}, space=space)
        dirs.source = str(root)
        return dirs


MAX_DIRECTION_ELEMENTS = 64 * 1024  # a [num_ws, w_dim] direction of any StyleGAN is far below this


def _canonical_emotion(value, *, where: str) -> str:
    return EMOTIONS[emotion_id(value, where=where)]


def _read_vector(value, *, where: str) -> np.ndarray:
    """One boundary: ``[D]``, ``[1, D]`` or ``[num_ws, D]`` floats, read without pickle and capped in size."""
    if isinstance(value, np.ndarray):
        a = value
    else:
        try:
            a = np.load(str(value), allow_pickle=False, mmap_mode="r")
        except Exception as exc:  # the .npy header parser raises several types on a corrupt file
            raise InputError(f"{where}: cannot read a boundary .npy ({exc})") from exc
        if not isinstance(a, np.ndarray):
            raise InputError(f"{where}: expected one array in a .npy file, found an archive")
    if a.size > MAX_DIRECTION_ELEMENTS or a.ndim not in (1, 2) or a.size == 0:
        raise InputError(f"{where}: a direction must be [dim], [1, dim] or [num_ws, dim], got shape {list(a.shape)}")
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"{where}: a direction must hold floats, got {a.dtype}")
    a = np.array(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise InputError(f"{where}: the direction holds NaN or infinite values")
    return a[0] if a.ndim == 2 and a.shape[0] == 1 else a


def load_directions(spec: str | os.PathLike, *, space: str | None = None, w_dim: int | None = None) -> Directions:
    """Directions from what a user types after ``--directions``:

    - ``d.npz``: a directions file (``stylemotion directions``);
    - a folder of ``emotion_<name>.npy`` / ``<name>.npy`` (stylegan-web ``latent_directions``);
    - ``happy=smile_boundary.npy,sad=sad.npy``: InterFaceGAN boundaries, any subset of the seven emotions;
    - ``random``: seeded random unit W directions (demos; needs ``w_dim``).

    ``space`` (None: from the file, or inferred from the shapes): W directions apply in W+ as they are (every ws
    row moves alike), W+ directions with equal rows apply in W; Z and W never stand in for each other.
    """
    text = str(spec)
    if text == "random":
        if w_dim is None:
            raise ConfigError("random directions need w_dim")
        if space not in (None, "w", "w+"):
            raise ConfigError(f"random directions are W directions; --space {space} does not apply")
        return random_directions(w_dim)
    if "=" in text and not Path(text).exists():
        pairs = {}
        for part in (p.strip() for p in text.split(",") if p.strip()):
            name, sep, file = part.partition("=")
            if not sep or not name.strip() or not file.strip():
                raise InputError(f"--directions item {part!r}: expected EMOTION=FILE.npy")
            if name.strip() in pairs:
                raise InputError(f"--directions names {name.strip()!r} twice")
            pairs[name.strip()] = file.strip()
        return Directions.from_boundaries(pairs, space=space)
    path = Path(text)
    if path.is_dir():
        return Directions.from_folder(path, space=space)
    if not path.exists():
        raise InputError(f"{path}: no such directions file or folder")
    if path.suffix.lower() == ".npy":
        raise InputError(f"{path}: a single .npy does not say which emotion it moves; give it as EMOTION={path}")
    return Directions.load(path).in_space(space)


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
        raise InputError(_no_match_message(path, seqs, frame_index, source, lookup))
    return out


def _no_match_message(path, seqs, frame_index: np.ndarray, source: np.ndarray, lookup: dict) -> str:
    """Why no latent found a label: the latents are of other videos, or of the same video at other frames."""
    def listed(names) -> str:
        names = sorted(names)
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    labelled = {same_source(q.source): q.source for q in seqs}
    embedded = {same_source(s): str(s) for s in source}
    keys = {src: (src if src in labelled else os.path.dirname(src)) for src in embedded}
    shared = {src for src, key in keys.items() if key in labelled}
    if not shared:
        return (f"{path}: no latent matched a labelled frame: the labels are of {listed(labelled.values())}, but the "
                f"latents were embedded from {listed(embedded.values())}. Labels match latents by video and frame "
                f"number, so label and embed the same video (`stylemotion label clip.mp4 --out seq.jsonl`, then "
                f"`stylemotion embed clip.mp4 ... --out clip.npz`)")
    embedded_frames = sorted({int(i) for s, i in zip(source, frame_index) if same_source(s) in shared})
    labelled_frames = sorted({i for (src, i) in lookup if src in {keys[s] for s in shared}})
    videos = listed(embedded[s] for s in shared)
    if set(embedded_frames) & set(labelled_frames):
        return (f"{path}: no latent matched a labelled frame: the labeler found no face in the frames of {videos} "
                f"that were embedded")
    return (f"{path}: no latent matched a labelled frame: both are of {videos}, but of different frames (labelled "
            f"{_frames_text(labelled_frames)}; embedded {_frames_text(embedded_frames)}); label and embed at the same "
            f"--fps (or --every)")


def _frames_text(frames: Sequence[int]) -> str:
    """``[0, 6, 12, 18, 24]`` -> ``"0, 6, 12, ... (5 frames)"``."""
    head = ", ".join(map(str, frames[:3]))
    return f"{head}, ... ({len(frames)} frames)" if len(frames) > 3 else (head or "none")


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
                      np.array([counts[e] for e in wanted]), source="learned")


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
    return Directions(list(EMOTIONS), d, "w", source=f"random directions (seed {seed})")
