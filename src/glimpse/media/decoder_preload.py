"""Imported by the decoders' fork server only (see decoding.py): what a decode would otherwise
load on first use, done once there instead of in every child (about 40 ms a photo)."""

from __future__ import annotations

import contextlib
import importlib
import pkgutil

import av
from PIL import Image

# Pillow, pillow_heif, blurhash and the filters; PyAV and FFmpeg's libraries (about 100 ms).
import glimpse.media.images
import glimpse.media.video  # noqa: F401

# Every extension module of PyAV: a file can make it load one it rarely needs (a subtitle
# stream's), and loading it inside a decode, under the memory budget, failed to map it ("failed
# to map segment from shared object"): an ImportError the API answered with a 500.
for _module in pkgutil.walk_packages(av.__path__, "av."):
    if _module.name != "av.__main__":
        importlib.import_module(_module.name)

# Pillow imports every format plugin on the first open, and the WebP codec on the first save.
Image.init()
Image.preinit()
from PIL import WebPImagePlugin, _webp  # noqa: E402, F401

# ... and the AVIF codec (libavif with its AV1 encoder) on the first AVIF save, where there is one.
with contextlib.suppress(ImportError):
    from PIL import AvifImagePlugin, _avif  # noqa: F401
