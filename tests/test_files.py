"""Artifacts are written whole, exclusively, and never at the cost of something else."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from eegdino_tf.errors import OutputError, OutputExistsError
from eegdino_tf.files import atomic_output


def write(path, text="new", *, force=False):
    with atomic_output(path, force=force) as tmp:
        tmp.write_text(text)


def write_folder(path, names, *, force=False):
    with atomic_output(path, force=force) as tmp:
        tmp.mkdir()
        for name in names:
            (tmp / name).write_text("new")


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_an_existing_file_is_kept_without_force_and_replaced_with_it(tmp_path):
    target = tmp_path / "out.bin"
    write(target, "old")
    with pytest.raises(OutputExistsError, match="pass force=True"):
        write(target)
    assert target.read_text() == "old"
    write(target, force=True)
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_a_concurrent_writer_that_got_there_first_is_never_overwritten(tmp_path):
    target = tmp_path / "out.npz"
    with pytest.raises(OutputExistsError, match="created by someone else") as err:
        with atomic_output(target) as tmp:
            tmp.write_text("mine")
            target.write_text("theirs")  # another process finishes first
    assert "was not saved" in str(err.value)
    assert target.read_text() == "theirs"


def test_force_never_deletes_a_folder_to_write_a_file(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="is a folder and the output is a file"):
        write(folder, force=True)
    assert (folder / "precious.txt").read_text() == "keep"


def test_force_replaces_a_folder_only_by_the_same_kind_of_folder(tmp_path):
    folder = tmp_path / "1"
    write_folder(folder, ["saved_model.pb", "variables"])
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="holds notes.txt"):
        write_folder(folder, ["saved_model.pb", "variables"], force=True)
    assert (folder / "notes.txt").read_text() == "mine"
    (folder / "notes.txt").unlink()
    write_folder(folder, ["saved_model.pb", "variables", "fingerprint.pb"], force=True)
    assert sorted(os.listdir(folder)) == ["fingerprint.pb", "saved_model.pb", "variables"]
    assert os.listdir(tmp_path) == ["1"]


def test_a_parent_that_is_a_file_or_unwritable_is_one_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match=r"f is a file, not a folder"):
        write(tmp_path / "f" / "out.bin")
    with pytest.raises(OutputError, match="cannot write /proc/"):
        write("/proc/eegdino-out.bin")


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "out.bin"
    code = (
        "import os, signal\n"
        "from eegdino_tf.files import atomic_output\n"
        f"with atomic_output({str(target)!r}) as tmp:\n"
        "    tmp.write_bytes(b'x' * 1000)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert result.returncode == -9
    left = os.listdir(tmp_path)
    assert len(left) == 1 and left[0].startswith(".out.bin.") and left[0].endswith(".tmp")
    write(target)
    assert os.listdir(tmp_path) == ["out.bin"]


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_output(target) as tmp:
        tmp.write_text("in progress")
        write(tmp_path / "other.bin")
        write(target.with_name("out.bin.more"))
        assert tmp.parent.exists()


def test_files_get_the_mode_of_any_new_file(tmp_path):
    old = os.umask(0o027)
    try:
        write(tmp_path / "a.bin")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640


def test_convert_with_force_onto_a_folder_keeps_the_folder(tmp_path, capsys):
    from eegdino_tf.cli import main
    from tests.helpers import TINY

    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep")
    code = main(["convert", str(TINY / "tiny_encoder.safetensors"), str(folder), "--force"])
    assert code == 2
    assert "is a folder and the output is a file" in capsys.readouterr().err
    assert (folder / "precious.txt").read_text() == "keep"
