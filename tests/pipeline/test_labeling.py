"""Labeling real faces in videos: largest face, classify, smooth; frames without a face are marked, not guessed."""
from __future__ import annotations

import json

import numpy as np
import pytest

from stylemotion.errors import ConfigError, InputError
from stylemotion.pipeline.labeling import LabelingConfig, label_videos, read_sequences, smooth_labels
from tests.models.test_emotion_cnn import needs_fer


def test_smoothing_is_a_majority_vote_that_keeps_gaps():
    assert smooth_labels([3, 3, 0, 3, 3, None, 6, 6, 3, 6], 3) == [3, 3, 3, 3, 3, None, 6, 6, 6, 6]
    assert smooth_labels([1, None, 2], 1) == [1, None, 2]
    # edges vote over the frames that exist; a tie keeps the frame's own label
    assert smooth_labels([4, 2, 2, 4], 3) == [4, 2, 2, 4]
    assert smooth_labels([0, 5, 0, 5, 5], 5) == [0, 5, 5, 5, 5]
    with pytest.raises(ConfigError, match="odd window"):
        LabelingConfig(smooth=4).validate()
    with pytest.raises(ConfigError, match="either fps or every"):
        LabelingConfig(fps=5, every=2).validate()


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
    (tmp_path / "b.jsonl").write_text('{"source": "a", "emotions": [true, 3]}\n')
    with pytest.raises(InputError, match=r"b\.jsonl:1: unknown emotion ids \['True'\]"):
        read_sequences(tmp_path / "b.jsonl")
    (tmp_path / "f.jsonl").write_text('{"source": "a", "emotions": [3, 3], "frame_index": [0]}\n')
    with pytest.raises(InputError, match=r"f\.jsonl:1: 'frame_index' must be 2 integers"):
        read_sequences(tmp_path / "f.jsonl")
    (tmp_path / "t.jsonl").write_text('{"source": "a"}\n')
    with pytest.raises(InputError, match=r"t\.jsonl:1: not an emotion sequence"):
        read_sequences(tmp_path / "t.jsonl")
