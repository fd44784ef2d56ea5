"""Labeling real faces in videos: largest face, classify, smooth; frames without a face are marked, not guessed."""
from __future__ import annotations

import json

import numpy as np
import pytest

from stylemotion.errors import InputError
from stylemotion.pipeline.labeling import LabelingConfig, label_videos, read_sequences, smooth_labels
from tests.models.test_emotion_cnn import needs_fer


def test_smoothing_is_a_majority_vote_that_keeps_gaps():
    assert smooth_labels([3, 3, 0, 3, 3, None, 6, 6, 3, 6], 3) == [3, 3, 3, 3, 3, None, 6, 6, 6, 6]
    assert smooth_labels([1, None, 2], 1) == [1, None, 2]


@needs_fer
def test_labels_a_video_of_a_smiling_face_with_faceless_frames(tmp_path):
    cv2 = pytest.importorskip("cv2")
    data = pytest.importorskip("skimage.data")
    from stylemotion.checkpoints.emotion_cnn import load_emotion_cnn

    face = cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    blank = np.full_like(face, 128)
    frames = [face, face, blank, face, face, blank]
    writer = cv2.VideoWriter(str(tmp_path / "v.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (256, 256))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "seq.jsonl"
    seqs = label_videos([tmp_path / "v.avi"], out, classifier=load_emotion_cnn(),
                        config=LabelingConfig(fps=None, smooth=3, probabilities=True), progress=False)
    assert seqs[0].emotions == [3, 3, None, 3, 3, None]
    line = json.loads(out.read_text().splitlines()[0])
    assert line["emotions"] == [3, 3, None, 3, 3, None] and line["frame_index"] == list(range(6))
    assert line["probabilities"][2] is None and abs(sum(line["probabilities"][0]) - 1) < 1e-3
    assert [s.emotions for s in read_sequences(out)] == [[3, 3, None, 3, 3, None]]
    writer = cv2.VideoWriter(str(tmp_path / "empty.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (256, 256))
    for _ in range(3):
        writer.write(blank)
    writer.release()
    with pytest.raises(InputError, match=r"empty\.avi: no face found in any of its 3 labelled frames"):
        label_videos([tmp_path / "empty.avi"], tmp_path / "x.jsonl", classifier=load_emotion_cnn(),
                     config=LabelingConfig(fps=None), progress=False)
    assert not (tmp_path / "x.jsonl").exists()


def test_bad_sequence_files(tmp_path):
    (tmp_path / "s.jsonl").write_text('{"source": "a", "emotions": [3, 9, null]}\n')
    with pytest.raises(InputError, match=r"s\.jsonl:1: unknown emotion ids \['9'\]"):
        read_sequences(tmp_path / "s.jsonl")
    (tmp_path / "t.jsonl").write_text('{"source": "a"}\n')
    with pytest.raises(InputError, match=r"t\.jsonl:1: not an emotion sequence"):
        read_sequences(tmp_path / "t.jsonl")
