"""Label the faces in real videos with emotions: detect (OpenCV Haar cascade, largest face), classify
(mini-Xception), smooth (majority vote over a short window), and write one emotion sequence per video.

Sequences are JSON lines (DESIGN.md section 4): ``{"source", "fps", "emotions": [id or null], "frame_index":
[...]}`` plus ``"probabilities"`` on request. A frame without a face is ``null``: marked, never guessed.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .._optional import require
from ..atomic import atomic_path
from ..errors import ConfigError, InputError
from ..models.emotion_cnn import EMOTIONS, INPUT_SIZE, EmotionCNN, faces_to_input
from .video_io import VIDEO_SUFFIXES, Frame, iter_frames


@dataclass(frozen=True)
class LabelingConfig:
    fps: float | None = 5.0  # frame rate to label at (None: every frame, subject to ``every``)
    every: int = 1
    smooth: int = 5  # majority-vote window in labelled frames (1: no smoothing)
    min_face: int = 32  # smallest face side in pixels the detector reports
    batch_size: int = 64
    probabilities: bool = False

    def validate(self) -> "LabelingConfig":
        if self.smooth < 1 or self.smooth % 2 == 0:
            raise ConfigError(f"smooth must be an odd window >= 1 (centred on the frame), got {self.smooth}")
        if self.every > 1 and self.fps is not None:
            raise ConfigError("give either fps or every, not both")
        if self.min_face < 8:
            raise ConfigError(f"min_face must be >= 8 pixels, got {self.min_face}")
        return self


class FaceDetector:
    """OpenCV's frontal-face Haar cascade (shipped in ``cv2.data``); returns the largest face or None."""

    def __init__(self, min_face: int = 32, cascade: str | None = None):
        cv2 = require("cv2", package="opencv-python-headless")
        path = cascade or os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        self._cv2, self.min_face = cv2, min_face
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise InputError(f"{path}: cannot load the face cascade")

    def largest_face(self, rgb: np.ndarray) -> np.ndarray | None:
        """The largest face as a ``[64, 64]`` uint8 grayscale crop, or None."""
        cv2 = self._cv2
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        boxes = self._cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                               minSize=(self.min_face, self.min_face))
        if len(boxes) == 0:
            return None
        x, y, w, h = max(boxes, key=lambda b: b[2] * b[3])
        return cv2.resize(gray[y:y + h, x:x + w], (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)


def smooth_labels(labels: Sequence[int | None], window: int) -> list[int | None]:
    """Majority vote over a centred window of labelled frames; ``None`` (no face) stays ``None`` and does not
    vote. Ties keep the frame's own label."""
    if window <= 1:
        return list(labels)
    half = window // 2
    out: list[int | None] = []
    for i, own in enumerate(labels):
        if own is None:
            out.append(None)
            continue
        votes = Counter(x for x in labels[max(0, i - half):i + half + 1] if x is not None)
        best = max(votes.values())
        out.append(own if votes[own] == best else min(k for k, v in votes.items() if v == best))
    return out


@dataclass
class EmotionSequence:
    source: str
    fps: float | None
    frame_index: list[int]
    emotions: list[int | None]
    probabilities: list[list[float] | None] | None = None

    def to_json(self) -> str:
        data = {"source": self.source, "fps": self.fps, "emotions": self.emotions, "frame_index": self.frame_index}
        if self.probabilities is not None:
            data["probabilities"] = self.probabilities
        return json.dumps(data)


def label_frames(frames: Iterable[Frame], classifier: EmotionCNN, detector: FaceDetector, *, source: str,
                 fps: float | None, config: LabelingConfig, progress: bool = False) -> EmotionSequence:
    """Classify the largest face of each frame (batched), then smooth."""
    from tqdm.auto import tqdm

    indices: list[int] = []
    faces: list[np.ndarray | None] = []
    for frame in tqdm(frames, desc=Path(source).name, unit="frame", leave=False, disable=not progress):
        indices.append(frame.index)
        faces.append(detector.largest_face(frame.rgb))
    probs: list[np.ndarray | None] = [None] * len(faces)
    found = [i for i, f in enumerate(faces) if f is not None]
    with torch.no_grad():
        for start in range(0, len(found), config.batch_size):
            chunk = found[start:start + config.batch_size]
            x = faces_to_input(torch.from_numpy(np.stack([faces[i] for i in chunk])))
            for i, p in zip(chunk, classifier.probabilities(x).numpy()):
                probs[i] = p
    raw = [int(p.argmax()) if p is not None else None for p in probs]
    seq = EmotionSequence(source, fps, indices, smooth_labels(raw, config.smooth))
    if config.probabilities:
        seq.probabilities = [[round(float(v), 5) for v in p] if p is not None else None for p in probs]
    return seq


def label_videos(paths: Sequence[str | os.PathLike], out: str | os.PathLike, *, classifier: EmotionCNN,
                 config: LabelingConfig = LabelingConfig(), progress: bool = True) -> list[EmotionSequence]:
    """Label every video (or image folder) and write the JSON lines file atomically."""
    from tqdm.auto import tqdm

    config = config.validate()
    detector = FaceDetector(config.min_face)
    sequences = []
    for path in tqdm(list(paths), desc="label", unit="video", disable=not progress):
        is_video = Path(path).suffix.lower() in VIDEO_SUFFIXES
        frames = iter_frames(path, every=config.every, fps=config.fps if is_video else None)
        seq = label_frames(frames, classifier, detector, source=os.path.normpath(str(path)),
                           fps=config.fps if is_video else None, config=config, progress=progress)
        if not seq.emotions:
            raise InputError(f"{path}: no frames to label")
        if all(e is None for e in seq.emotions):
            raise InputError(f"{path}: no face found in any of its {len(seq.emotions)} labelled frames "
                             f"(faces smaller than {config.min_face} px are not detected)")
        sequences.append(seq)
    with atomic_path(out) as tmp:
        Path(tmp).write_text("".join(s.to_json() + "\n" for s in sequences))
    return sequences


def read_sequences(path: str | os.PathLike) -> list[EmotionSequence]:
    """Read JSON lines; every id must be a FER-2013 id (0..6) or null."""
    where = str(path)
    try:
        lines = Path(where).read_text().splitlines()
    except OSError as exc:
        raise InputError(f"{where}: cannot read sequences ({exc})") from exc
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            emotions = data["emotions"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"{where}:{n}: not an emotion sequence ({exc})") from exc
        if not isinstance(emotions, list):
            raise InputError(f"{where}:{n}: 'emotions' must be a list of ids, got {type(emotions).__name__}")
        bad = [e for e in emotions if e is not None and (isinstance(e, bool) or not isinstance(e, int)
                                                         or not 0 <= e < len(EMOTIONS))]
        if bad:
            raise InputError(f"{where}:{n}: unknown emotion ids {sorted(set(map(str, bad)))} "
                             f"(ids are 0..{len(EMOTIONS) - 1}: {', '.join(EMOTIONS)})")
        frame_index = data.get("frame_index", list(range(len(emotions))))
        if (not isinstance(frame_index, list) or len(frame_index) != len(emotions)
                or not all(isinstance(i, int) and not isinstance(i, bool) for i in frame_index)):
            raise InputError(f"{where}:{n}: 'frame_index' must be {len(emotions)} integers, one per emotion")
        out.append(EmotionSequence(str(data.get("source", f"line{n}")), data.get("fps"), frame_index,
                                   list(emotions), data.get("probabilities")))
    if not out:
        raise InputError(f"{where}: no sequences")
    return out


def classify_crops(frames: np.ndarray, classifier: EmotionCNN, *, batch_size: int = 256) -> np.ndarray:
    """Emotion probabilities ``[N, 7]`` of frames that are already face crops (a face generator's output):
    ``[N, H, W, 3]`` uint8 RGB, turned grey with OpenCV as ``FaceDetector`` does and resized to the classifier's
    64x64, without detection."""
    cv2 = require("cv2", package="opencv-python-headless")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ConfigError(f"frames must be [N, H, W, 3] uint8, got shape {list(frames.shape)} {frames.dtype}")
    gray = np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (INPUT_SIZE, INPUT_SIZE),
                                interpolation=cv2.INTER_AREA) if f.shape[0] != INPUT_SIZE or f.shape[1] != INPUT_SIZE
                     else cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
    out = []
    with torch.no_grad():
        for start in range(0, len(gray), batch_size):
            out.append(classifier.probabilities(faces_to_input(torch.from_numpy(gray[start:start + batch_size]))))
    return torch.cat(out).numpy()

