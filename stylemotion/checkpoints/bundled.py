"""Models that ship inside the package (``stylemotion/data/<name>/``), each with its own emotion directions and
emotion LSTM, so ``stylemotion video digiface-64 --script happy:2`` needs nothing else.

``digiface-64``: a 64x64 StyleGAN2 distilled from the DCGAN face generator of ``gan_face_generate`` 1.1.1 (MIT),
which was trained on DigiFace-1M's synthetic faces (licensed for non-commercial research only). See
``stylemotion/data/digiface-64/MODEL.md`` for how it was made and measured.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
BUNDLED_MODELS = ("digiface-64",)
DEFAULT_MODEL = "digiface-64"
ASSETS = {"generator": "generator.safetensors", "directions": "directions.npz", "lstm": "lstm.safetensors"}
NOTES = {
    "digiface-64": "digiface-64: a 64x64 StyleGAN2 distilled from gan_face_generate's DCGAN (trained on "
                   "DigiFace-1M, synthetic faces licensed for non-commercial research only)",
}


def is_bundled(name: object) -> bool:
    return isinstance(name, str) and name in BUNDLED_MODELS and not Path(name).exists()


def bundled_file(name: str, asset: str) -> Path:
    """The path of a bundled model's ``generator`` / ``directions`` / ``lstm``; CheckpointError when this install
    lacks it (a source tree without the data files)."""
    if name not in BUNDLED_MODELS:
        raise CheckpointError(f"{name}: not a bundled model (bundled: {', '.join(BUNDLED_MODELS)})")
    path = DATA_DIR / name / ASSETS[asset]
    if not path.is_file():
        raise CheckpointError(f"{name}: its {asset} file {path} is missing from this install; reinstall stylemotion")
    return path


def bundled_name(G) -> str | None:
    """The bundled model ``G`` was loaded as, or None."""
    info = getattr(G, "checkpoint_info", None)
    return info.path if info is not None and info.format == "bundled" else None


def own_asset(G, asset: str) -> Path | None:
    """``G``'s own ``directions`` / ``lstm`` when it is a bundled model, else None."""
    name = bundled_name(G)
    return bundled_file(name, asset) if name is not None else None
