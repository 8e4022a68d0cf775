"""Files sent with a request, as data URIs, confined to one folder."""

from __future__ import annotations

import base64
import mimetypes
from functools import lru_cache
from pathlib import Path

# The API refuses request bodies over 10 MB; base64 makes a file 4/3 its size.
MAX_BODY_BYTES = 10 * 1024 * 1024
# Python's built-in table only: the machine's /etc/mime.types would make bodies differ by host.
_MIME_TYPES = mimetypes.MimeTypes(filenames=())
_MAX_FILE_BYTES = MAX_BODY_BYTES * 3 // 4


class AttachmentError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode_file(path: Path, name: str) -> dict[str, str]:
    """The API's attach entry for one file: ``{"data": "data:<mime>;base64,...", "name": ...}``."""
    try:
        size = path.stat().st_size
    except OSError:
        raise AttachmentError("attachment_missing", f"file {name!r} was not found") from None
    if not path.is_file():
        raise AttachmentError("attachment_missing", f"{name!r} is not a file")
    if size > _MAX_FILE_BYTES:
        raise AttachmentError(
            "attachment_too_large",
            f"file {name!r} is {size / 1e6:.1f} MB; the API takes at most "
            f"{MAX_BODY_BYTES // 2**20} MB per request, so send a smaller file or a link to it",
        )
    mime = _MIME_TYPES.guess_type(name)[0] or "application/octet-stream"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return {"data": f"data:{mime};base64,{data}", "name": name}


class AttachmentFolder:
    """Resolves per-row ``attach`` paths; a path that leaves the folder is refused."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        # Many rows usually attach the same few files: read and encode each once.
        self._encode = lru_cache(maxsize=32)(encode_file)

    def load(self, written: str) -> dict[str, str]:
        # resolve() follows symlinks, so a link pointing out of the folder is refused too.
        path = (self.root / written).resolve()
        if not path.is_relative_to(self.root):
            raise AttachmentError(
                "attachment_outside_dir",
                f"{written!r} is outside the attachment folder {self.root}; move the file "
                "into that folder or pass --attach-dir with the folder that holds it",
            )
        if not path.exists():
            raise AttachmentError(
                "attachment_missing",
                f"file {written!r} was not found in the attachment folder {self.root}; "
                "check the name, or pass --attach-dir with the folder that holds it",
            )
        return self._encode(path, Path(written).name)
