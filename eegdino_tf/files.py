"""Atomic, exclusive writes for every artifact the package produces.

:func:`atomic_output` is the one way a file or folder is written (converted weights, exports,
``encode`` results, fine-tuning metrics). Its guarantees:

- the artifact is written under a temporary name beside its final path and renamed into
  place only when complete, so a failure or ``kill -9`` never leaves a half-written artifact;
- without ``force``, an existing path is never touched, and a concurrent writer that gets
  there first is never overwritten: the rename is exclusive, and the loser gets an error;
- with ``force``, a file replaces a file, and a folder replaces a folder only when every
  entry in the old folder is one the new artifact also has (an old SavedModel by a new one):
  a folder is never deleted to make room for a file, nor a folder holding anything else;
- temporaries left by a process that died (``.NAME.HOST.PID.*.tmp``) are removed by the next
  write to the same path;
- a file gets the mode any new file gets here (``0o666`` minus the umask).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from eegdino_tf.errors import EEGDinoError, OutputError, OutputExistsError

_HOST = socket.gethostname().replace(".", "-")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``.

    The caller writes a file or a folder at the yielded path. If the block raises, the
    temporary is deleted and ``path`` is untouched. See the module docstring for what
    ``force`` may replace.
    """
    final = Path(path)
    if _exists(final) and not force:
        raise OutputExistsError(f"{final} already exists; pass force=True to overwrite it")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(final)
        prefix = f".{final.name}.{_HOST}.{os.getpid()}."
        tmp_dir = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=final.parent))
    except OSError as err:
        raise _output_error(final, err) from None
    tmp = tmp_dir / final.name
    try:
        yield tmp
        if not _exists(tmp):
            raise EEGDinoError(f"nothing was written for {final}")
        if tmp.is_file():
            os.chmod(tmp, 0o666 & ~_umask(tmp_dir))
        _move_into_place(tmp, final, force=force)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _move_into_place(tmp: Path, final: Path, *, force: bool) -> None:
    """Rename the finished ``tmp`` onto ``final``: exclusively, or replacing what ``force`` may."""
    is_folder = tmp.is_dir()
    if _exists(final):
        _check_replaceable(tmp, final, force=force)
    try:
        if not is_folder and not force:
            os.link(tmp, final)  # fails if final exists: never overwrites a concurrent writer
        elif not is_folder:
            os.replace(tmp, final)
        elif force and _exists(final):
            old = tmp.parent / "replaced"  # deleted with the temporary folder
            os.rename(final, old)
            try:
                os.rename(tmp, final)
            except OSError:
                os.rename(old, final)
                raise
        else:
            os.rename(tmp, final)  # fails on an existing file or non-empty folder
    except OSError as err:
        if err.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise OutputExistsError(
                f"{final} was created by someone else while this was being written; "
                "nothing was overwritten and this result was not saved (pass force=True to "
                "replace it)"
            ) from None
        raise _output_error(final, err) from None


def _check_replaceable(tmp: Path, final: Path, *, force: bool) -> None:
    """Refuse to replace a folder with a file, a file with a folder, or a foreign folder."""
    if not force:
        raise OutputExistsError(
            f"{final} was created by someone else while this was being written; nothing was "
            "overwritten and this result was not saved (pass force=True to replace it)"
        )
    old_is_folder = final.is_dir() and not final.is_symlink()
    if old_is_folder != tmp.is_dir():
        old, new = ("a folder", "a file") if old_is_folder else ("a file", "a folder")
        raise OutputExistsError(
            f"{final} is {old} and the output is {new}; force=True replaces only like with "
            "like: give another path, or remove it yourself"
        )
    if old_is_folder:
        foreign = sorted({p.name for p in final.iterdir()} - {p.name for p in tmp.iterdir()})
        if foreign:
            raise OutputExistsError(
                f"{final} holds {', '.join(foreign[:5])}, which this output does not write; "
                "force=True never deletes a folder's other contents: give another path, or "
                "remove it yourself"
            )


def _remove_stale_temporaries(final: Path) -> None:
    """Delete temporaries for ``final`` left by processes on this host that no longer run."""
    stem = f".{final.name}.{_HOST}."
    for candidate in final.parent.glob(f"{glob.escape(stem)}*.tmp"):
        pid = candidate.name[len(stem) :].split(".", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(candidate, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def _umask(folder: Path) -> int:
    """The process umask, read without changing it (a probe file's mode shows it)."""
    probe = folder / ".umask-probe"
    os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        return 0o666 & ~probe.stat().st_mode & 0o777
    finally:
        probe.unlink()


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _output_error(final: Path, err: OSError) -> OutputError:
    blocking = next((p for p in final.parents if p.exists() and not p.is_dir()), None)
    reason = f"{blocking} is a file, not a folder" if blocking else err.strerror or str(err)
    return OutputError(f"cannot write {final}: {reason}")


def sha256_of(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(2**20):
            digest.update(block)
    return digest.hexdigest()
