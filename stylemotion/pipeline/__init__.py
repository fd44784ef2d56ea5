"""The offline stages, one module each (embed, video_io, latents_io, ...)."""
