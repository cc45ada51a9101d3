"""Where the page's uploads go: one private temporary folder, removed when the server stops.

Each upload gets its own sub-folder, so a clip's sidecars are never found by name from another upload, and is
written as it arrives (never held in memory whole) up to a size limit the server checks before reading.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from affectllm.errors import InputError

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_CHUNK = 1 << 20


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e6:.3g} MB"


@dataclass(frozen=True)
class StoredFile:
    """One uploaded file: ``token`` is what the page refers to it by, ``name`` what the user called it."""

    token: str
    name: str
    path: Path
    size: int


def safe_file_name(name: str) -> str:
    """The uploaded name reduced to a plain file name that keeps its extension (readers choose by it)."""
    base = Path(name.replace("\\", "/")).name
    cleaned = _UNSAFE_NAME_CHARS.sub("_", base).strip("._") or "upload"
    stem, dot, suffix = cleaned.rpartition(".")
    if dot and len(cleaned) > 100:
        return stem[: 99 - len(suffix)] + "." + suffix[:20]
    return cleaned[:100]


class UploadStore:
    """Uploaded files in a private (mode 0700) temporary folder; ``close()`` removes them all."""

    def __init__(self, max_bytes: int, parent: str | Path | None = None) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self.root = Path(tempfile.mkdtemp(prefix="affectllm-ui-", dir=parent))
        self._files: dict[str, StoredFile] = {}

    def check_size(self, name: str, size: int) -> None:
        """Refuse an upload by its declared size, before any of it is read."""
        if size > self.max_bytes:
            raise InputError(
                name,
                f"the file is {_megabytes(size)}; uploads are limited to {_megabytes(self.max_bytes)} "
                "(affectllm ui --max-upload-mb)",
            )

    def save(self, name: str, stream: BinaryIO, size: int) -> StoredFile:
        """Write ``size`` bytes of ``stream`` as an upload called ``name``."""
        self.check_size(name, size)
        token = secrets.token_hex(8)
        folder = self.root / token
        folder.mkdir()
        path = folder / safe_file_name(name)
        remaining = size
        with path.open("wb") as out:
            while remaining > 0:
                chunk = stream.read(min(_CHUNK, remaining))
                if not chunk:
                    shutil.rmtree(folder, ignore_errors=True)
                    raise InputError(name, f"the upload ended after {size - remaining} of {size} bytes")
                out.write(chunk)
                remaining -= len(chunk)
        stored = StoredFile(token, Path(name.replace("\\", "/")).name or path.name, path, size)
        self._files[token] = stored
        return stored

    def get(self, token: str) -> StoredFile:
        stored = self._files.get(token)
        if stored is None:
            raise InputError(None, f"no uploaded file {token!r} (upload it again)")
        return stored

    def redact(self, text: str) -> str:
        """``text`` with each stored file's private path replaced by the name the user gave it."""
        for stored in self._files.values():
            text = text.replace(str(stored.path), stored.name).replace(
                str(stored.path.resolve()), stored.name
            )
        return text

    def user_name(self, path: str | Path | None) -> str | None:
        """The name the user gave a stored file, for messages that would otherwise show the private path."""
        if path is None:
            return None
        resolved = Path(path).resolve()
        for stored in self._files.values():
            if stored.path.resolve() == resolved:
                return stored.name
        return None

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self._files.clear()
