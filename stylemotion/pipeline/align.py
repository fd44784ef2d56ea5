"""Face alignment the way FFHQ was made: find each face and its five landmarks (MTCNN), then cut the FFHQ crop.

Detection is MTCNN's cascade (``models/mtcnn.py``, weights from facenet-pytorch): P-Net over an image pyramid
proposes windows, R-Net on 24x24 crops and O-Net on 48x48 crops refine them; O-Net gives the landmarks. Non-maximum
suppression is written here (numpy), so torchvision is not needed.

The crop follows FFHQ's ``align_images`` with five points instead of 68 (eye centres stand in for the means of the
eye contours, the mouth corners are the same points): an oriented square around ``eye_avg + 0.1 * eye_to_mouth``
whose side is ``max(4 |eye_to_eye|, 3.6 |eye_to_mouth|)``, turned so the eyes lie level, resampled to the
generator's resolution. Parts of the square outside the photo are filled by reflection.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

MIN_FACE = 20  # pixels: the smallest face searched for (and at least 1/20 of the photo's shorter side)
PYRAMID_FACTOR = 0.709
THRESHOLDS = (0.6, 0.7, 0.7)  # P-Net, R-Net, O-Net face probabilities
MIN_SCORE = 0.9  # what align accepts as a face (O-Net probability): lower ones are often hands or ears


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
    score: float
    landmarks: np.ndarray  # [5, 2] (x, y): left eye, right eye, nose, left mouth corner, right mouth corner
    # ("left" is the image's left: the person's right eye)


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (highest score first)."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        overlap = inter / (np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Each box as the square of its longer side around the same centre."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2:4] = out[:, 0:2] + side[:, None]
    return out


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    out[:, :4] = boxes[:, :4] + offsets * np.stack([w, h, w, h], axis=1)
    return out


def _crops(image: torch.Tensor, boxes: np.ndarray, size: int) -> torch.Tensor:
    """[N, 3, size, size] crops of ``image`` [3, H, W] (normalised) at integer boxes, zero outside the image."""
    _, H, W = image.shape
    out = []
    for x1, y1, x2, y2 in np.round(boxes[:, :4]).astype(np.int64):
        w, h = max(int(x2 - x1) + 1, 1), max(int(y2 - y1) + 1, 1)
        patch = image.new_zeros(3, h, w)
        sx, sy, ex, ey = max(x1, 0), max(y1, 0), min(x2 + 1, W), min(y2 + 1, H)
        if ex > sx and ey > sy:
            patch[:, sy - y1:ey - y1, sx - x1:ex - x1] = image[:, sy:ey, sx:ex]
        out.append(F.interpolate(patch[None], size=(size, size), mode="area"))
    return torch.cat(out) if out else image.new_zeros(0, 3, size, size)


@torch.no_grad()
def detect_faces(image: np.ndarray, nets=None, *, min_face: int | None = None) -> list[Face]:
    """Faces in ``image`` ([H, W, 3] uint8 RGB), largest first. ``nets``: (PNet, RNet, ONet), by default MTCNN's
    weights from facenet-pytorch. ``min_face``: the smallest face in pixels (default: MIN_FACE or 1/20 of the
    shorter side, whichever is larger)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"image must be [H, W, 3] uint8 RGB, got {list(image.shape)} {image.dtype}")
    if nets is None:
        nets = default_nets()
    pnet, rnet, onet = nets
    H, W = image.shape[:2]
    min_face = min_face or max(MIN_FACE, min(H, W) // 20)
    x = (torch.from_numpy(np.array(image)).permute(2, 0, 1).float() - 127.5) / 128.0

    # Stage 1: P-Net over the pyramid (a 12-pixel window finds faces of 12 / scale pixels).
    scale, found = 12.0 / min_face, []
    while min(H, W) * scale >= 12:
        h, w = int(math.ceil(H * scale)), int(math.ceil(W * scale))
        prob, reg = pnet(F.interpolate(x[None], size=(h, w), mode="area"))
        prob, reg = prob[0].numpy(), reg[0].numpy()
        ys, xs = np.nonzero(prob >= THRESHOLDS[0])
        if len(ys):
            boxes = np.stack([np.floor((2 * xs + 1) / scale), np.floor((2 * ys + 1) / scale),
                              np.floor((2 * xs + 12) / scale), np.floor((2 * ys + 12) / scale),
                              prob[ys, xs]], axis=1)
            offsets = reg[:, ys, xs].T
            keep = _nms(boxes, boxes[:, 4], 0.5)
            found.append(np.concatenate([boxes[keep], offsets[keep]], axis=1))
        scale *= PYRAMID_FACTOR
    if not found:
        return []
    cand = np.concatenate(found)
    cand = cand[_nms(cand, cand[:, 4], 0.7)]
    w, h = cand[:, 2] - cand[:, 0], cand[:, 3] - cand[:, 1]
    boxes = cand[:, :5].copy()
    boxes[:, :4] += cand[:, 5:9] * np.stack([w, h, w, h], axis=1)
    boxes = _square(boxes)

    # Stage 2: R-Net.
    prob, reg = rnet(_crops(x, boxes, 24))
    ok = prob.numpy() >= THRESHOLDS[1]
    boxes, reg = boxes[ok], reg.numpy()[ok]
    boxes[:, 4] = prob.numpy()[ok]
    keep = _nms(boxes, boxes[:, 4], 0.7)
    boxes = _square(_regress(boxes[keep], reg[keep]))
    if len(boxes) == 0:
        return []

    # Stage 3: O-Net, with the landmarks.
    prob, reg, marks = onet(_crops(x, boxes, 48))
    ok = prob.numpy() >= THRESHOLDS[2]
    boxes, reg, marks = boxes[ok], reg.numpy()[ok], marks.numpy()[ok]
    boxes[:, 4] = prob.numpy()[ok]
    w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    points = np.stack([boxes[:, 0:1] + w[:, None] * marks[:, :5] - 1, boxes[:, 1:2] + h[:, None] * marks[:, 5:] - 1],
                      axis=2)
    boxes = _regress(boxes, reg)
    keep = _nms(boxes, boxes[:, 4], 0.7, mode="min")
    faces = [Face(tuple(float(v) for v in boxes[i, :4]), float(boxes[i, 4]), points[i].astype(np.float64))
             for i in keep]
    return sorted(faces, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


_NETS = None


def default_nets():
    global _NETS
    if _NETS is None:
        from ..checkpoints.mtcnn import load_mtcnn

        _NETS = load_mtcnn()
    return _NETS


# ------------------------------------------------------------------------------------------------ the FFHQ crop


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ crop's corners [4, 2] (top-left, bottom-left, bottom-right, top-right) from five landmarks."""
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_left, eye_right = lm[0], lm[1]
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[3] + lm[4]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def template_eyes(size: int) -> np.ndarray:
    """Where the eyes of an upright face whose eye-to-mouth distance is at most 1.1x its eye distance land in an
    FFHQ crop of ``size`` pixels (the usual case): [2, 2] (x, y), left then right. The height depends a little on
    the face's proportions: ``0.5 - 0.025 * |eye_to_mouth| / |eye_to_eye|`` of the side; 0.475 for equal ones."""
    return np.array([[0.375 * size, 0.475 * size], [0.625 * size, 0.475 * size]])


def crop_ffhq(image: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(crop [size, size, 3] uint8, matrix [2, 3])``: the FFHQ crop, and the affine map from photo pixels to crop
    pixels (for landmarks)."""
    from PIL import Image

    quad = ffhq_quad(landmarks)
    side = np.hypot(*(quad[3] - quad[0]))
    img = Image.fromarray(image)
    shrink = int(np.floor(side / size * 0.5))
    if shrink > 1:  # antialias: downscale first, as FFHQ does
        img = img.resize((int(np.rint(img.width / shrink)), int(np.rint(img.height / shrink))), Image.LANCZOS)
        quad = quad / shrink
        side /= shrink
    # Reflect-pad where the square leaves the photo.
    border = max(int(np.rint(side * 0.1)), 3)
    lo = np.floor(quad.min(axis=0)).astype(int) - border
    hi = np.ceil(quad.max(axis=0)).astype(int) + border
    pad = (max(-lo[0], 0), max(-lo[1], 0), max(hi[0] - img.width, 0), max(hi[1] - img.height, 0))
    arr = np.asarray(img)
    if any(pad):
        limit = min(arr.shape[0], arr.shape[1]) - 1
        while any(p > limit for p in pad):  # numpy's reflect needs pads shorter than the image: repeat
            step = tuple(min(p, limit) for p in pad)
            arr = np.pad(arr, ((step[1], step[3]), (step[0], step[2]), (0, 0)), mode="reflect")
            quad = quad + [step[0], step[1]]
            pad = tuple(p - s for p, s in zip(pad, step))
            limit = min(arr.shape[0], arr.shape[1]) - 1
        arr = np.pad(arr, ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), mode="reflect")
        quad = quad + [pad[0], pad[1]]
    img = Image.fromarray(arr)
    out = img.transform((size, size), Image.QUAD, tuple((quad + 0.5).flatten()), Image.BILINEAR)
    # The affine map from the original photo to the crop: corners top-left -> (0, 0), top-right -> (size, 0),
    # bottom-left -> (0, size).
    q0 = ffhq_quad(landmarks)
    ex, ey = (q0[3] - q0[0]), (q0[1] - q0[0])
    basis = np.linalg.inv(np.stack([ex, ey], axis=1)) * size
    matrix = np.concatenate([basis, (-basis @ q0[0])[:, None]], axis=1)
    return np.asarray(out), matrix


@dataclass(frozen=True)
class Aligned:
    crop: np.ndarray  # [size, size, 3] uint8
    face: Face  # in the photo's pixels
    landmarks: np.ndarray  # [5, 2] in the crop's pixels
    faces_found: int


def align(image: np.ndarray, size: int, *, where: str = "", nets=None, face_index: int = 0,
          faces: list[Face] | None = None) -> Aligned:
    """Detect faces in ``image`` (or take ``faces`` found already) and cut the FFHQ crop of the ``face_index``-th
    largest at ``size`` pixels; an InputError naming ``where`` when there is no face."""
    faces = [f for f in (faces if faces is not None else detect_faces(image, nets)) if f.score >= MIN_SCORE]
    if not faces:
        raise InputError(f"{where or 'image'}: no face found (MTCNN, probability >= {MIN_SCORE}); use a photo "
                         "with a visible, roughly frontal face")
    if face_index >= len(faces):
        raise InputError(f"{where or 'image'}: face {face_index} asked for, {len(faces)} found")
    face = faces[face_index]
    crop, matrix = crop_ffhq(image, face.landmarks, size)
    marks = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
    return Aligned(crop, face, marks, len(faces))
