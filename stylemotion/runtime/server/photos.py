"""Use my photo: an upload decoded in memory (never written to disk), its face found and cropped, and embedded in
the generator's latent space by the projector, one upload at a time."""
from __future__ import annotations

import io

from ...errors import InputError


def decode_photo(body: bytes, expected_format: str):
    """An uploaded photo's bytes -> [H, W, 3] uint8 RGB, upright (EXIF orientation applied); the format must be
    the one its Content-Type named and the size at most 8192 x 8192. InputError says what is wrong."""
    import numpy as np
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(body)) as im:
            if im.format != expected_format:
                raise InputError(f"the upload is {im.format or 'not an image'}, not the {expected_format} its "
                                 "Content-Type says")
            if im.width * im.height > 8192 * 8192:
                raise InputError(f"the photo is {im.width}x{im.height}: at most 8192x8192 pixels")
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"))
    except InputError:
        raise
    except Exception as exc:  # Pillow raises many types on a corrupt file
        raise InputError(f"the upload is not a readable image ({type(exc).__name__}: {exc})") from None


def photo_embedder(G, *, steps: int):
    """``(align, embed)`` for uploads: MTCNN + the FFHQ crop at the generator's resolution, and the projector
    (in W, the perceptual loss on VGG16 features) on a copy of the generator, built at the first upload. Embedding
    runs one upload at a time (a lock), beside the engine rendering the streams."""
    import threading

    import torch

    state: dict = {}
    lock = threading.Lock()

    def align_photo(image):
        from ...pipeline.align import align

        return align(image, G.img_resolution, where="the uploaded photo")

    def embed_photo(crop, progress):
        import copy

        from ...checkpoints.vgg16 import load_vgg16
        from ...models.vgg16 import PerceptualDistance
        from ...pipeline.embed import Projector, ProjectorConfig

        with lock:
            if "projector" not in state:
                vgg, lpips_weights = load_vgg16(None)
                state["projector"] = Projector(copy.deepcopy(G).cpu(), PerceptualDistance(vgg, "lpips", lpips_weights),
                                               ProjectorConfig(space="w", steps=steps).validate())
            target = torch.from_numpy(crop.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0
            result = state["projector"].project(target, on_step=lambda step, losses: progress(step))
            return result.ws.detach().cpu()

    return align_photo, embed_photo
