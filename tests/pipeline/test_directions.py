"""Direction learning recovers planted directions; labels from CSV, folders and the labeler; bad labels."""
from __future__ import annotations

import json

import numpy as np
import pytest

from stylemotion.errors import InputError
from stylemotion.pipeline.directions import (Directions, condition, labels_from_csv, labels_from_folders,
                                             labels_from_sequences, learn_directions)


def planted(n=1200, shape=(4, 8), seed=0, anisotropic=True):
    """Latents with a known linear labelling rule: happy where u.a_happy > 1, sad where u.a_sad > 1 (the larger
    wins), otherwise neutral, for u ~ N(0, I) and orthonormal a. The latents are x = u * scale with per-feature
    scales from 0.2 to 5 (as W's are), so the true boundary normal in latent space is a / scale."""
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    q, _ = np.linalg.qr(rng.normal(size=(d, 2)))
    u = rng.normal(size=(n, d))
    sh, ss = u @ q[:, 0], u @ q[:, 1]
    labels = np.full(n, 6)
    labels[(sh > 1) & (sh >= ss)] = 3
    labels[(ss > 1) & (ss > sh)] = 4
    scale = np.logspace(np.log10(0.2), np.log10(5), d) if anisotropic else np.ones(d)
    rng.shuffle(scale)
    d_happy, d_sad = q[:, 0] / scale, q[:, 1] / scale
    d_happy, d_sad = d_happy / np.linalg.norm(d_happy), d_sad / np.linalg.norm(d_sad)
    return (u * scale).reshape((n,) + shape), labels, d_happy.reshape(shape), d_sad.reshape(shape)


def test_recovers_planted_directions_with_held_out_accuracy(tmp_path):
    x, labels, d_happy, d_sad = planted()
    dirs = learn_directions(x, labels, space="w+")
    assert dirs.emotions == ["happy", "sad", "neutral"] and dirs.directions.shape == (3, 4, 8)
    cos_h = float((dirs["happy"] * d_happy).sum())
    cos_s = float((dirs["sad"] * d_sad).sum())
    assert cos_h >= 0.9 and cos_s >= 0.9, (cos_h, cos_s)
    assert (dirs.accuracy[:2] > 0.9).all() and (dirs.accuracy < 1.0).all()  # held out, so not a perfect fit
    saved = Directions.load(dirs.save(tmp_path / "d.npz"))
    assert saved.emotions == dirs.emotions and np.allclose(saved.directions, dirs.directions)
    c = condition(dirs, "happy", "sad")
    assert abs(float((c * dirs["sad"]).sum())) < 1e-6 and abs(np.linalg.norm(c) - 1) < 1e-6


def test_emotions_without_samples_are_an_error():
    x, labels, _, _ = planted(n=300)
    with pytest.raises(InputError, match=r"too few samples.*'angry': 0"):
        learn_directions(x, labels, emotions=["happy", "angry"])
    with pytest.raises(InputError, match="unknown emotions"):
        learn_directions(x, labels, emotions=["hungry"])


def test_label_sources(tmp_path):
    frame_index = np.array([0, 5, 10])
    (tmp_path / "l.csv").write_text("frame_index,emotion\n0,happy\n10,4\n")
    assert list(labels_from_csv(tmp_path / "l.csv", frame_index)) == [3, -1, 4]
    (tmp_path / "bad.csv").write_text("frame_index,emotion\n7,happy\n")
    with pytest.raises(InputError, match=r"bad\.csv:2: frame 7 has no latent"):
        labels_from_csv(tmp_path / "bad.csv", frame_index)
    (tmp_path / "odd.csv").write_text("frame_index,emotion\n0,smug\n")
    with pytest.raises(InputError, match=r"odd\.csv:2: unknown emotion 'smug'"):
        labels_from_csv(tmp_path / "odd.csv", frame_index)
    assert list(labels_from_folders(np.array(["mug/happy/a.png", "mug/Surprise/b.png"]))) == [3, 5]
    (tmp_path / "s.jsonl").write_text(json.dumps({"source": "v.mp4", "fps": 5, "emotions": [3, None, 0],
                                                  "frame_index": [0, 5, 10]}) + "\n")
    assert list(labels_from_sequences(tmp_path / "s.jsonl", frame_index, np.array(["v.mp4"] * 3))) == [3, -1, 0]
    assert list(labels_from_sequences(tmp_path / "s.jsonl", frame_index, np.array(["./v.mp4"] * 3))) == [3, -1, 0]
    with pytest.raises(InputError, match=r"no latent matched a labelled frame: the labels are of v\.mp4, but the "
                                          r"latents were embedded from other\.mp4\. .*label and embed the same video"):
        labels_from_sequences(tmp_path / "s.jsonl", frame_index, np.array(["other.mp4"] * 3))
    with pytest.raises(InputError, match=r"both are of v\.mp4, but of different frames \(labelled 0, 5, 10; "
                                          r"embedded 1, 2, 3, \.\.\. \(4 frames\)\); label and embed at the "
                                          r"same --fps"):
        labels_from_sequences(tmp_path / "s.jsonl", np.array([1, 2, 3, 4]), np.array(["v.mp4"] * 4))
    with pytest.raises(InputError, match=r"the labeler found no face in the frames of v\.mp4 that were embedded"):
        labels_from_sequences(tmp_path / "s.jsonl", np.array([5]), np.array(["v.mp4"]))


def test_csv_with_several_sources(tmp_path):
    frame_index, source = np.array([0, 1, 0, 1]), np.array(["a.mp4", "a.mp4", "b.mp4", "b.mp4"])
    (tmp_path / "l.csv").write_text("frame_index,emotion\n0,happy\n")
    with pytest.raises(InputError, match="latents come from 2 sources; add a 'source' column"):
        labels_from_csv(tmp_path / "l.csv", frame_index, source)
    (tmp_path / "s.csv").write_text("source,frame_index,emotion\nb.mp4,1,sad\n./a.mp4,0,happy\n")
    assert list(labels_from_csv(tmp_path / "s.csv", frame_index, source)) == [3, -1, -1, 4]
    (tmp_path / "x.csv").write_text("source,frame_index,emotion\na.mp4,zero,sad\n")
    with pytest.raises(InputError, match=r"x\.csv:2: bad row"):
        labels_from_csv(tmp_path / "x.csv", frame_index, source)
    with pytest.raises(InputError, match=r"nope\.csv: cannot read"):
        labels_from_csv(tmp_path / "nope.csv", frame_index, source)


def test_labeler_and_embedder_sources_match_for_folders_and_videos(tmp_path):
    """The labeler names a folder once; the embedder names each image: they still match, frame by frame."""
    import json as _json

    from PIL import Image

    from stylemotion.pipeline.video_io import iter_frames

    folder = tmp_path / "mug" / "subject1"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / f"{i:03d}.png")
    frames = list(iter_frames(folder))  # what `stylemotion embed` records
    seq = {"source": str(tmp_path / "mug" / "subject1") + "/", "fps": None, "emotions": [5, None, 2],
           "frame_index": [0, 1, 2]}
    (tmp_path / "s.jsonl").write_text(_json.dumps(seq) + "\n")
    got = labels_from_sequences(tmp_path / "s.jsonl", np.array([f.index for f in frames]),
                                np.array([f.source for f in frames]))
    assert list(got) == [5, -1, 2]

# --- reading directions made elsewhere --------------------------------------------------------------------------

from stylemotion.errors import ConfigError  # noqa: E402
from stylemotion.pipeline.directions import load_directions  # noqa: E402


def test_npz_needs_only_emotions_directions_space(tmp_path):
    d = np.random.default_rng(0).normal(size=(2, 8)).astype(np.float32)
    np.savez(tmp_path / "minimal.npz", emotions=np.array(["happy", "sad"]), directions=d, space=np.array("w"))
    dirs = Directions.load(tmp_path / "minimal.npz")
    assert dirs.emotions == ["happy", "sad"] and dirs.space == "w" and dirs.accuracy is None
    np.testing.assert_array_equal(dirs["sad"], d[1])
    np.savez(tmp_path / "acc.npz", emotions=np.array(["Happy"]), directions=d[:1], space=np.array("w"),
             accuracy=np.array([0.9]))
    assert Directions.load(tmp_path / "acc.npz").accuracy.tolist() == [0.9]
    # and it saves back without inventing metadata
    with np.load(dirs.save(tmp_path / "again.npz")) as z:
        assert sorted(z.files) == ["directions", "emotions", "space"]


@pytest.mark.parametrize("arrays, match", [
    (dict(emotions=np.array(["happy"]), space=np.array("w")), r"missing 'directions'"),
    (dict(emotions=np.array(["happy", "sad"]), directions=np.zeros((1, 8)), space=np.array("w")),
     r"shape \[1, 8\]; 2 emotions"),
    (dict(emotions=np.array(["hungry"]), directions=np.zeros((1, 8)), space=np.array("w")), "unknown emotion 'hungry'"),
    (dict(emotions=np.array(["happy"]), directions=np.zeros((1, 8)), space=np.array("q")), "space must be one of"),
    (dict(emotions=np.array(["happy"]), directions=np.full((1, 8), np.nan), space=np.array("w")), r"\['happy'\].*NaN"),
    (dict(emotions=np.array(["happy"]), directions=np.zeros((1, 8)), space=np.array("w"), counts=np.ones(3)),
     r"'counts' has shape \[3\]"),
])
def test_bad_npz_names_the_key(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match=match):
        Directions.load(tmp_path / "bad.npz")


def test_interfacegan_boundaries_in_every_layout(tmp_path):
    rng = np.random.default_rng(1)
    smile, sad = rng.normal(size=(1, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32)
    np.save(tmp_path / "smile_boundary.npy", smile)  # InterFaceGAN's own [1, w_dim]
    np.save(tmp_path / "sad.npy", sad)
    dirs = load_directions(f"happy={tmp_path / 'smile_boundary.npy'},sad={tmp_path / 'sad.npy'}", space="w")
    assert dirs.emotions == ["happy", "sad"] and dirs.space == "w" and dirs.directions.shape == (2, 8)
    np.testing.assert_array_equal(dirs["happy"], smile[0])
    # a [num_ws, w_dim] boundary implies W+; vectors are then repeated on every row (the same edit)
    plus = rng.normal(size=(4, 8)).astype(np.float32)
    np.save(tmp_path / "surprise.npy", plus)
    mixed = Directions.from_boundaries({"surprise": tmp_path / "surprise.npy", "sad": tmp_path / "sad.npy"})
    assert mixed.space == "w+" and mixed.directions.shape == (2, 4, 8)
    np.testing.assert_array_equal(mixed["sad"], np.repeat(sad[None], 4, axis=0))
    with pytest.raises(InputError, match=r"surprise\.npy: a \[4, 8\] W\+ direction whose rows differ"):
        Directions.from_boundaries({"surprise": tmp_path / "surprise.npy"}, space="w")
    with pytest.raises(InputError, match=r"different shapes"):
        Directions.from_boundaries({"happy": np.zeros(8, np.float32), "sad": np.zeros(9, np.float32)})


def test_bad_boundaries_are_named(tmp_path):
    np.save(tmp_path / "ints.npy", np.arange(8))
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2), np.float32))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    cases = {f"happy={tmp_path / 'ints.npy'}": r"ints\.npy: a direction must hold floats",
             f"happy={tmp_path / 'cube.npy'}": r"cube\.npy: a direction must be \[dim\]",
             f"happy={tmp_path / 'junk.npy'}": r"junk\.npy: cannot read a boundary",
             f"happy={tmp_path / 'obj.npy'}": r"obj\.npy: cannot read a boundary",  # pickles are never loaded
             f"hungry={tmp_path / 'cube.npy'}": r"unknown emotion 'hungry'",
             f"happy={tmp_path / 'missing.npy'}": r"missing\.npy: cannot read",
             "happy=": r"expected EMOTION=FILE\.npy",
             str(tmp_path / "cube.npy"): r"does not say which emotion",
             str(tmp_path / "nope.npz"): r"no such directions file or folder"}
    for spec, match in cases.items():
        with pytest.raises(InputError, match=match):
            load_directions(spec)


def test_stylegan_web_folder(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "latent_directions"
    folder.mkdir()
    wanted = {}
    for name in ("happy", "angry", "surprise"):
        wanted[name] = rng.normal(size=(18, 8)).astype(np.float32)
        np.save(folder / f"emotion_{name}.npy", wanted[name])
    for other in ("age", "emotion_easy", "gender"):  # directions that are not FER-2013 emotions are skipped
        np.save(folder / f"{other}.npy", rng.normal(size=(18, 8)).astype(np.float32))
    dirs = load_directions(folder)
    assert dirs.space == "w+" and dirs.emotions == ["angry", "happy", "surprise"]
    for name, value in wanted.items():
        np.testing.assert_array_equal(dirs[name], value)
    with pytest.raises(ConfigError, match="no direction for 'sad'"):
        dirs["sad"]
    np.save(folder / "happy.npy", wanted["happy"])
    with pytest.raises(InputError, match=r"both emotion_happy\.npy and happy\.npy"):
        load_directions(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    np.save(empty / "age.npy", np.zeros(8, np.float32))
    with pytest.raises(InputError, match=r"no emotion directions found.*age\.npy"):
        load_directions(empty)


def test_w_directions_apply_in_w_plus_and_z_never_stands_in_for_w(tmp_path):
    import torch

    from stylemotion.pipeline.keyframes import ScriptItem, keyframe_targets

    rng = np.random.default_rng(4)
    happy = rng.normal(size=8).astype(np.float32)
    Directions(["happy"], happy[None], "w").save(tmp_path / "d.npz")
    assert load_directions(tmp_path / "d.npz", space="w").space == "w"
    plus = load_directions(tmp_path / "d.npz", space="w+")  # the README's `animate ... --space w+`
    identity = torch.as_tensor(rng.normal(size=(1, 5, 8)).astype(np.float32))  # ws [1, num_ws, w_dim]
    moved = keyframe_targets(identity, plus, [ScriptItem("happy", 1.0, 2.0)])
    np.testing.assert_allclose(moved.numpy(), identity.numpy() + 2.0 * happy[None, None], rtol=1e-6)  # every row
    assert load_directions("random", space="w+", w_dim=8).emotions  # random directions are W: they apply too
    # W+ directions with equal rows are W directions; with differing rows they are not
    Directions(["happy"], np.repeat(happy[None, None], 5, axis=1), "w+").save(tmp_path / "same.npz")
    np.testing.assert_array_equal(load_directions(tmp_path / "same.npz", space="w").directions, happy[None])
    Directions(["happy"], rng.normal(size=(1, 5, 8)).astype(np.float32), "w+").save(tmp_path / "rows.npz")
    with pytest.raises(ConfigError, match=r"rows\.npz holds W\+ directions whose rows differ; they cannot be used "
                                          r"in W"):
        load_directions(tmp_path / "rows.npz", space="w")
    with pytest.raises(ConfigError, match=r"d\.npz holds 'w' directions, but --space z was asked"):
        load_directions(tmp_path / "d.npz", space="z")
    with pytest.raises(ConfigError, match="random directions are W directions"):
        load_directions("random", space="z", w_dim=8)
    # InterFaceGAN vectors asked for in W+ are W directions too (not [E, 1, w_dim], which fits no generator)
    np.save(tmp_path / "smile.npy", happy[None])
    boundaries = load_directions(f"happy={tmp_path / 'smile.npy'}", space="w+")
    assert boundaries.space == "w" and boundaries.directions.shape == (1, 8)


def test_an_emotion_the_directions_lack_is_named_with_those_they_hold():
    from stylemotion.pipeline.keyframes import parse_script

    dirs = Directions(["happy", "sad"], np.eye(2, 8, dtype=np.float32), "w", source="d.npz")
    assert dirs.emotion("Happy", where="--emotion") == "happy" and dirs.emotion(4, where="--emotion") == "sad"
    with pytest.raises(ConfigError, match=r"--emotion: no direction for 'disgust'; the directions \(d\.npz\) hold "
                                          r"happy, sad$"):
        dirs.emotion("disgust", where="--emotion")
    with pytest.raises(ConfigError, match=r"unknown emotion 'grumpy'; the directions \(d\.npz\) hold happy, sad$"):
        dirs.emotion("grumpy", where="--emotion")
    assert [i.emotion for i in parse_script("happy:1,4:2", directions=dirs)] == ["happy", "sad"]
    with pytest.raises(ConfigError, match=r"script item 'fear:1': no direction for 'fear'; .* hold happy, sad$"):
        parse_script("happy:1,fear:1", directions=dirs)
    assert [i.emotion for i in parse_script("fear:1")] == ["fear"]  # without directions: any FER-2013 emotion
