"""fsutil: the one way oemkit writes a file. Atomic and durable, with the mode asked for whatever the umask, and never
over something that is not a regular file (a link an attacker planted, a device, a FIFO, a folder)."""

from __future__ import annotations

import errno
import os
import signal
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hypervisor_core.fsutil import ReadRefused, WriteRefused, append_line, atomic_file, read_regular, write_atomic


@contextmanager
def _umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


@contextmanager
def _within(seconds: float) -> Iterator[None]:
    """Fail instead of hanging: opening a FIFO for writing blocks until a reader comes, which none will."""

    def timeout(_signum, _frame):
        raise TimeoutError(f"still blocked after {seconds}s")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _tree(folder: Path) -> dict[str, tuple]:
    """Everything in folder: kind, mode, inode and content (a link's target; a FIFO or device is never opened)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            content: object = os.readlink(p)
        elif stat.S_ISREG(st.st_mode):
            content = p.read_bytes()
        else:
            content = None
        out[str(p.relative_to(folder))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_ino, content)
    return out


# ------------------------------------------------------------------------------------------------- writing
@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
@pytest.mark.parametrize("mode", [0o600, 0o644])
def test_write_atomic_writes_the_content_with_the_mode(mode: int, umask: int, tmp_path: Path) -> None:
    target = tmp_path / "etc" / "ssh" / "key"  # folders are made when asked for
    with _umask(umask):
        write_atomic(target, b"secret\x00bytes\n", mode, mkdir=True)
    assert target.read_bytes() == b"secret\x00bytes\n"
    assert stat.S_IMODE(target.stat().st_mode) == mode  # neither widened (umask 0) nor narrowed (umask 077)
    assert os.listdir(target.parent) == ["key"]  # no temporary file left


def test_without_a_mode_the_umask_applies_and_without_mkdir_no_folder_is_made(tmp_path: Path) -> None:
    """The factory's outputs (a sealed config) are files the user creates: the umask decides, and a mistyped -o
    folder is an error, not a new folder."""
    with _umask(0o077):
        write_atomic(tmp_path / "unit.json", "{}\n")
    assert stat.S_IMODE((tmp_path / "unit.json").stat().st_mode) == 0o600
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "typo" / "unit.json", "{}\n")
    assert not (tmp_path / "typo").exists()


def test_exclusive_never_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    key = tmp_path / "signing.key"
    write_atomic(key, "first\n", 0o600, exclusive=True)
    with pytest.raises(FileExistsError):
        write_atomic(key, "second\n", 0o600, exclusive=True)
    assert key.read_text() == "first\n" and os.listdir(tmp_path) == ["signing.key"]


def test_a_stream_whose_writer_fails_leaves_nothing(tmp_path: Path) -> None:
    """A download refused half-way (a wrong SHA-256): the block raises, the target never appears."""
    target = tmp_path / "images" / "abc"
    with pytest.raises(ValueError, match="wrong hash"), atomic_file(target, mkdir=True) as out:
        out.write(b"part of an image")
        raise ValueError("wrong hash")
    assert list((tmp_path / "images").iterdir()) == []


def test_write_atomic_encodes_text_as_utf8(tmp_path: Path) -> None:
    write_atomic(tmp_path / "timezone", "Europe/Zürich\n")
    assert (tmp_path / "timezone").read_bytes() == "Europe/Zürich\n".encode()


def test_write_atomic_replaces_a_regular_file_by_rename(tmp_path: Path) -> None:
    target = tmp_path / "hostname"
    target.write_text("old\n")
    target.chmod(0o644)
    with target.open() as reader:  # a reader of the old file...
        write_atomic(target, "new\n", 0o600)
        assert reader.read() == "old\n"  # ...sees all of the old content, never a mix (a rename, not an overwrite)
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["hostname"]


# ------------------------------------------------------------------------------------------------- refusals
def _symlink(tmp_path: Path) -> Path:
    (tmp_path / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (tmp_path / "target").symlink_to(tmp_path / "shadow")
    return tmp_path / "target"


def _dangling_symlink(tmp_path: Path) -> Path:
    (tmp_path / "target").symlink_to(tmp_path / "not-yet")  # following it would create a file of the linker's choice
    return tmp_path / "target"


def _fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "target")
    return tmp_path / "target"


def _folder(tmp_path: Path) -> Path:
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "inside").write_text("kept\n")
    return tmp_path / "target"


def _char_device(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    try:
        os.mknod(tmp_path / "target", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
    except PermissionError:
        pytest.skip("this container may not make device nodes")
    return tmp_path / "target"


NOT_REGULAR: dict[str, tuple[Callable[[Path], Path], str]] = {
    "symlink": (_symlink, "a symbolic link"),
    "dangling symlink": (_dangling_symlink, "a symbolic link"),
    "fifo": (_fifo, "a FIFO"),
    "folder": (_folder, "a folder"),
    "char device": (_char_device, "a character device"),
}
WRITERS: dict[str, Callable[[Path], None]] = {
    "write_atomic": lambda path: write_atomic(path, "new\n"),
    "append_line": lambda path: append_line(path, "new"),
}


@pytest.mark.parametrize("writer", list(WRITERS.values()), ids=list(WRITERS))
@pytest.mark.parametrize(("make", "kind"), list(NOT_REGULAR.values()), ids=list(NOT_REGULAR))
def test_a_target_that_is_not_a_regular_file_is_refused_and_left_alone(
    make: Callable[[Path], Path], kind: str, writer: Callable[[Path], None], tmp_path: Path
) -> None:
    target = make(tmp_path)
    before = _tree(tmp_path)
    with _within(5), pytest.raises(WriteRefused, match=f"{kind}: refusing to replace it") as refused:
        writer(target)
    assert isinstance(refused.value, OSError)  # callers that handle OSError handle this too
    assert refused.value.filename == str(target)
    assert _tree(tmp_path) == before  # the link, its target, the FIFO, the folder: all as they were


# ------------------------------------------------------------------------------------------------- failures
def _fail_with(exc: BaseException) -> Callable[..., None]:
    def fail(*_args) -> None:
        raise exc

    return fail


FAILURES = {
    # what a full or dying disk does, which no real disk can be made to do on cue: simulated
    "fsync EIO": ("fsync", OSError(errno.EIO, "Input/output error")),
    "fchmod ENOSPC": ("fchmod", OSError(errno.ENOSPC, "No space left on device")),
    "interrupted during fsync": ("fsync", KeyboardInterrupt()),  # SIGINT mid-write: not an Exception
}


@pytest.mark.parametrize("existing", [True, False], ids=["replacing", "new"])
@pytest.mark.parametrize(("call", "exc"), list(FAILURES.values()), ids=list(FAILURES))
def test_a_failed_write_leaves_the_target_as_it_was_and_no_temporary_file(
    call: str, exc: BaseException, existing: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "machine-id"
    if existing:
        target.write_text("0123456789abcdef0123456789abcdef\n")
    before = _tree(tmp_path)
    with monkeypatch.context() as m:
        m.setattr(os, call, _fail_with(exc))
        with pytest.raises(type(exc)) as raised:
            write_atomic(target, "fedcba9876543210fedcba9876543210\n", 0o444)
    assert raised.value is exc  # the failure itself reaches the caller
    assert _tree(tmp_path) == before  # old content, same inode; or still no file
    assert list(tmp_path.glob(".machine-id.*.tmp")) == []


def test_a_target_swapped_for_a_link_while_writing_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A race: the target checked out as a regular file, then became a symlink before the rename."""
    target = tmp_path / "authorized_keys"
    target.write_text("ssh-ed25519 AAAA old\n")
    (tmp_path / "elsewhere").write_text("precious\n")
    real_fsync = os.fsync

    def fsync_then_swap(fd: int) -> None:
        real_fsync(fd)
        if target.is_file() and not target.is_symlink():
            target.unlink()
            target.symlink_to(tmp_path / "elsewhere")

    monkeypatch.setattr(os, "fsync", fsync_then_swap)  # the only way to hit the window on cue
    with pytest.raises(WriteRefused, match="a symbolic link"):
        write_atomic(target, "ssh-ed25519 AAAA new\n", 0o600)
    monkeypatch.undo()
    assert os.readlink(target) == str(tmp_path / "elsewhere")  # the link was not replaced...
    assert (tmp_path / "elsewhere").read_text() == "precious\n"  # ...nor followed
    assert list(tmp_path.glob(".authorized_keys.*.tmp")) == []


# ------------------------------------------------------------------------------------------------- the journal
def test_append_line_appends_one_line_each_and_fsyncs_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = tmp_path / "state" / "journal.jsonl"
    synced: list[tuple[int, bytes]] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:  # what was on the file, and which file, at each fsync
        synced.append((os.fstat(fd).st_ino, journal.read_bytes()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    with _umask(0o000):
        append_line(journal, '{"step": "run", "event": "begin"}')
        append_line(journal, '{"step": "host.hostname", "event": "done"}\n')  # its own newline is not doubled
    monkeypatch.undo()
    lines = b'{"step": "run", "event": "begin"}\n{"step": "host.hostname", "event": "done"}\n'
    assert journal.read_bytes() == lines
    ino = journal.stat().st_ino
    assert synced == [(ino, lines[: lines.index(b"\n") + 1]), (ino, lines)]  # each line fsync'd once written
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600  # the audit trail is private, even with umask 0


def test_append_line_keeps_what_is_there(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    journal.write_text('{"step": "run", "event": "begin"}\n')
    append_line(journal, "{}")
    assert journal.read_text() == '{"step": "run", "event": "begin"}\n{}\n'


def test_a_line_after_a_torn_line_starts_on_a_line_of_its_own(tmp_path: Path) -> None:
    """append_line's promise: a crash loses at most the line being written, and a reader skips a torn last line.
    Appending after a torn line without a line break first makes the reader lose the next line too: for the
    journal, the rerun's "run begin", so Journal.interrupted() merges two runs' steps."""
    journal = tmp_path / "journal.jsonl"
    journal.write_text('{"step": "run", "event": "begin"}\n{"step": "host.ss')  # power cut mid-line
    append_line(journal, '{"step": "run", "event": "begin"}')
    assert journal.read_text().splitlines()[-1] == '{"step": "run", "event": "begin"}'


def test_exclusive_write_on_a_filesystem_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """vfat, exFAT and many FUSE/SMB mounts refuse link(2) with EPERM (a mock: no such mount here)."""

    def no_links(src: object, dst: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "unit.json"
    write_atomic(target, "one", exclusive=True)
    assert target.read_text() == "one"
    with pytest.raises(FileExistsError):
        write_atomic(target, "two", exclusive=True)
    assert target.read_text() == "one" and [p.name for p in tmp_path.iterdir()] == ["unit.json"]


def test_a_device_is_refused_unopened(tmp_path: Path) -> None:
    dev = tmp_path / "null"
    os.mknod(dev, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    with pytest.raises(ReadRefused, match="a character device"):
        read_regular(dev, 100)
