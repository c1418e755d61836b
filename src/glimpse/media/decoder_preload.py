"""Imported by the decoders' fork server only (see decoding.py): what a decode would otherwise
load on first use, done once there instead of in every child (about 40 ms a photo)."""

from __future__ import annotations

from PIL import Image

# Pillow, pillow_heif, blurhash and the filters; PyAV and FFmpeg's libraries (about 100 ms).
import glimpse.media.images
import glimpse.media.video  # noqa: F401

# Pillow imports every format plugin on the first open, and the WebP codec on the first save.
Image.init()
Image.preinit()
from PIL import WebPImagePlugin, _webp  # noqa: E402, F401
