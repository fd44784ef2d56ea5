"""Face alignment (MTCNN + the FFHQ crop) on real photos that ship in registry packages, and `animate`."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from stylemotion.errors import InputError


def _insightface_image(name: str) -> Path:
    spec = importlib.util.find_spec("insightface")  # located, never imported (it needs onnxruntime, cv2, ...)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "data" / "images" / name
        if path.is_file():
            return path
    pytest.skip("insightface's sample images are not installed (make installs insightface --no-deps)")


@pytest.fixture(scope="module")
def nets():
    from stylemotion.checkpoints.mtcnn import load_mtcnn
    from stylemotion.errors import MissingDependencyError

    try:
        return load_mtcnn()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))


def test_mtcnn_weights_load_key_for_key_and_bad_files_say_which(nets, tmp_path):
    import torch

    from stylemotion.checkpoints.mtcnn import default_mtcnn_dir, load_mtcnn
    from stylemotion.errors import CheckpointError

    assert [type(n).__name__ for n in nets] == ["PNet", "RNet", "ONet"]
    for name in ("pnet", "rnet", "onet"):
        (tmp_path / f"{name}.pt").write_bytes((default_mtcnn_dir() / f"{name}.pt").read_bytes())
    state = torch.load(tmp_path / "onet.pt", weights_only=True)
    state["dense6_3.weight"] = state["dense6_3.weight"][:5]
    torch.save(state, tmp_path / "onet.pt")
    with pytest.raises(CheckpointError, match=r"onet.pt: 'dense6_3.weight' has shape \(5, 256\)"):
        load_mtcnn(tmp_path)
    (tmp_path / "rnet.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="rnet.pt: not a readable torch weights file"):
        load_mtcnn(tmp_path)


def test_the_astronaut_is_aligned_to_the_ffhq_template(nets):
    from skimage import data

    from stylemotion.pipeline.align import align, detect_faces, template_eyes

    size = 256
    result = align(data.astronaut(), size, nets=nets)
    assert result.faces_found == 1 and result.crop.shape == (size, size, 3)
    # The landmarks carried into the crop sit on the template (geometry) ...
    assert np.abs(result.landmarks[:2] - template_eyes(size)).max() < 3.0, result.landmarks[:2]
    # ... and so do the eyes MTCNN finds again in the crop itself (end to end, a few pixels).
    again = detect_faces(result.crop, nets)
    assert len(again) == 1
    assert np.abs(again[0].landmarks[:2] - template_eyes(size)).max() < 4.0, again[0].landmarks[:2]


def test_every_face_of_a_group_photo_is_aligned(nets):
    from PIL import Image

    from stylemotion.pipeline.align import MIN_SCORE, align, detect_faces

    photo = np.asarray(Image.open(_insightface_image("t1.jpg")).convert("RGB"))
    faces = [f for f in detect_faces(photo, nets) if f.score >= MIN_SCORE]
    assert len(faces) == 6  # the six people of insightface's t1.jpg
    size = 128
    for i in range(len(faces)):
        crop = align(photo, size, nets=nets, face_index=i, faces=faces).crop
        again = detect_faces(crop, nets)
        assert again, f"face {i}: no face in its own crop"
        eyes = again[0].landmarks[:2]
        # Turned heads change the eye distance, not where the eyes' midpoint goes, nor that they lie level.
        assert np.abs(eyes.mean(axis=0) - [0.5 * size, 0.475 * size]).max() < 4.0, (i, eyes)
        assert abs(eyes[1, 1] - eyes[0, 1]) < 4.0, (i, eyes)


def test_a_photo_without_a_face_is_a_clear_error(nets):
    from skimage import data

    from stylemotion.pipeline.align import align

    with pytest.raises(InputError, match="coffee.png: no face found"):
        align(data.coffee(), 64, where="coffee.png", nets=nets)
    with pytest.raises(InputError, match="face 3 asked for, 1 found"):
        align(data.astronaut(), 64, where="astronaut.png", nets=nets, face_index=3)


@pytest.mark.slow
def test_animate_the_astronaut_with_the_bundled_model(nets, tmp_path):
    """The embedded face is the photo's (closer to the crop than the nearest of 100 random faces of the model, by
    the projector's own perceptual distance), and its happy edit makes the FER classifier more sure of happy."""
    import torch
    from PIL import Image
    from skimage import data

    from stylemotion.checkpoints import load_generator
    from stylemotion.checkpoints.emotion_cnn import load_emotion_cnn
    from stylemotion.checkpoints.vgg16 import load_vgg16
    from stylemotion.models.emotion_cnn import EMOTIONS
    from stylemotion.models.stylegan2 import z_from_seed
    from stylemotion.models.vgg16 import PerceptualDistance
    from stylemotion.pipeline.directions import load_directions
    from stylemotion.pipeline.labeling import classify_crops
    from stylemotion.pipeline.latents_io import read_identity
    from stylemotion.runtime.jobs import animate_photo, render_images
    from stylemotion.checkpoints.bundled import own_asset

    G = load_generator("digiface-64")
    dirs = load_directions(own_asset(G, "directions"), w_dim=G.w_dim)
    vgg, lpips_weights = load_vgg16(None)
    perceptual = PerceptualDistance(vgg, "lpips", lpips_weights)
    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    out = tmp_path / "astronaut.mp4"
    # Embedded with the pixel loss alone (fast; the README's picture uses the perceptual loss too), judged by the
    # perceptual distance.
    result = animate_photo(G, photo, out, directions=dirs, script="happy:1,surprise:1,neutral:0.5", steps=80,
                           perceptual=None, fps=8, progress=False, log=lambda m: None, backend="torch")
    for key in ("aligned", "latents", "reconstruction", "sheet", "video"):
        assert Path(result[key]).is_file(), key
    assert set(result["strips"]) == {"happy", "surprise", "neutral"}

    def as_tensor(images):
        return torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1

    crop = as_tensor(result["crop_image"][None])
    randoms = render_images(G, G.mapping(torch.cat([z_from_seed(s, G.z_dim) for s in range(100)]),
                                         truncation_psi=0.7), progress=False, backend="torch")
    with torch.no_grad():
        d_recon = float(perceptual(as_tensor(result["reconstruction_image"][None]), crop))
        d_random = perceptual(as_tensor(randoms), crop.expand(100, -1, -1, -1)).min().item()
    assert d_recon < d_random, (d_recon, d_random)

    ws = torch.as_tensor(read_identity(result["latents"], num_ws=G.num_ws, w_dim=G.w_dim))[None]
    happy = torch.as_tensor(dirs["happy"])
    edits = render_images(G, torch.cat([ws - 6 * happy, ws, ws + 6 * happy]), progress=False, backend="torch")
    p = classify_crops(edits, load_emotion_cnn())[:, EMOTIONS.index("happy")]
    assert p[2] > p[0], p


def test_the_align_command_writes_crops_and_reports_photos_without_a_face(nets, tmp_path, capsys):
    import json

    from PIL import Image
    from skimage import data

    from stylemotion.cli import main

    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    Image.fromarray(data.coffee()).save(tmp_path / "coffee.png")
    code = main(["align", str(tmp_path / "astronaut.png"), str(tmp_path / "coffee.png"), "--size", "64",
                 "--out", str(tmp_path / "crops")])
    assert code == 1  # one photo had no face: reported, not guessed
    assert "coffee.png: no face found" in capsys.readouterr().err
    report = json.loads((tmp_path / "crops" / "faces.json").read_text())
    assert [f["crop"] for f in report["faces"]] == [str(tmp_path / "crops" / "astronaut-0.png")]
    assert np.asarray(Image.open(tmp_path / "crops" / "astronaut-0.png")).shape == (64, 64, 3)
    assert len(report["not_aligned"]) == 1
