"""File-system helpers shared by every command that writes an artifact."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from eegdino_tf.errors import EEGDinoError, OutputExistsError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The caller writes a file or a directory at the yielded path. If the block raises, the
    temporary is deleted and ``path`` is untouched, so no half-written artifact is ever left.
    An existing ``path`` is an error unless ``force`` is true.
    """
    final = Path(path)
    if final.exists() and not force:
        raise OutputExistsError(f"{final} already exists; pass force=True to overwrite it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    tmp = tmp_dir / final.name
    try:
        yield tmp
        if not tmp.exists():
            raise EEGDinoError(f"nothing was written for {final}")
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        elif final.exists():
            final.unlink()
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
