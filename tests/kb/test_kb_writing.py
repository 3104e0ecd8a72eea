"""Knowledge bases written whole or not at all: a rebuild that fails (a full disk, a real write error) leaves the old KB
loading with the same search results and gives one line and exit 2; a second writer, an unwritable output and a folder
that is not a KB are refused before any work; a writer killed mid-swap leaves a KB that the next writer restores; the
build log counts each clip once."""

import contextlib
import errno
import io
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import modeling_paircap.file_io_paircap as file_io
from datasets_scripts.clip_tokens import refresh_tokens
from modeling_paircap.file_io_paircap import FolderWriteError, folder_lock, replacing_folder
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase
from paircap.cli import main

REPO = Path(__file__).resolve().parents[2]


def build_arguments(release: Path, corpora: dict, output: Path, work_dir: Path) -> list[str]:
    """`paircap kb build` of the 7 real Clotho clips (5 captions each) in shards of 4 rows: clips straddle shards."""
    return [
        "kb", "build", "--corpus", "clotho:evaluation", "--root", f"clotho={corpora['clotho']}",
        "--model", str(release), "--output", str(output), "--work-dir", str(work_dir),
        "--num-workers", "0", "--shard-size", "4",
    ]  # fmt: skip


@pytest.fixture(autouse=True)
def verified_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAIRCAP_VERIFIED_CACHE", str(tmp_path / "verified-cache"))


@pytest.fixture(scope="module")
def good_kb(tiny_release, corpora, tmp_path_factory) -> tuple[Path, Path, str]:
    """A KB built with `paircap kb build`: (folder, its finished work folder, the build's log)."""
    root = tmp_path_factory.mktemp("kb-writing")
    output, work_dir, log = root / "kb", root / "work", io.StringIO()
    with contextlib.redirect_stderr(log):
        assert main(build_arguments(tiny_release[0], corpora, output, work_dir)) == 0, log.getvalue()[-3000:]
    return output, work_dir, log.getvalue()


@pytest.fixture
def old_kb(good_kb, tmp_path) -> Path:
    """A copy of the good KB, alone in its parent folder."""
    folder = tmp_path / "parent" / "kb"
    shutil.copytree(good_kb[0], folder)
    return folder


def search_results(folder: Path) -> list:
    """Pair-to-pair hits of the KB's first 10 rows, every file hashed first."""
    kb = PairCapKnowledgeBase.from_pretrained(folder, verify="always")
    vectors = kb.pair_vectors(range(10))
    return kb.search(vectors[:, : kb.metadata.audio_dim], vectors[:, kb.metadata.audio_dim :], mode="pair2pair")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of `folder` and beside it (its parent's other entries), by relative name."""
    return {
        path.relative_to(folder.parent).as_posix(): path.read_bytes()
        for path in sorted(folder.parent.rglob("*"))
        if path.is_file() and "verified-cache" not in path.parts
    }


def one_error_line(err: str, command: str = "kb build") -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and lines[-1].startswith(f"paircap {command}: error: "), err[-3000:]
    assert sum("error" in line for line in lines) == 1, err[-3000:]
    return lines[-1]


class FullDisk:
    """A file whose writes take `room` more bytes, then raise ENOSPC (the disk is full partway through a write)."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        if len(data) > self.room:
            self.handle.write(bytes(data[: self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.handle.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def fill_disk_during_index_write(monkeypatch) -> None:
    """The index file, written through faiss's callback writer, hits a full disk half-way."""
    real_open = open

    def open_(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        return FullDisk(handle, 2000) if Path(path).name == "index.faiss" and "w" in mode else handle

    monkeypatch.setattr(file_io, "open", open_, raising=False)


def fill_disk_at_fsync(monkeypatch) -> None:
    """The data reach the disk only at fsync, which reports the full disk (delayed allocation, network disks)."""

    def fsync(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(file_io.os, "fsync", fsync)


@pytest.mark.parametrize("fill", [fill_disk_during_index_write, fill_disk_at_fsync], ids=["index-write", "fsync"])
def test_a_full_disk_during_a_rebuild_leaves_the_old_kb_and_says_so_in_one_line(
    fill, good_kb, old_kb, tiny_release, corpora, capsys, monkeypatch
):
    before, files = search_results(old_kb), snapshot(old_kb)
    fill(monkeypatch)
    assert main(build_arguments(tiny_release[0], corpora, old_kb, good_kb[1])) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(old_kb) in line and "No space left on device" in line and "it is unchanged" in line
    monkeypatch.undo()
    assert snapshot(old_kb) == files  # nothing left beside it: no staging folder, no lock file
    assert search_results(old_kb) == before


def test_a_real_write_error_in_a_rebuild_leaves_the_old_kb(good_kb, old_kb, tiny_release, corpora):
    """The rebuild runs with a 4 KiB file-size limit (RLIMIT_FSIZE): pyarrow's and faiss's writes of the new KB fail
    in write(2) itself (EFBIG), as on a full disk; unprivileged and real."""
    before, files = search_results(old_kb), snapshot(old_kb)
    command = [sys.executable, "-m", "paircap.cli", *build_arguments(tiny_release[0], corpora, old_kb, good_kb[1])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    line = one_error_line(result.stderr)
    assert "File too large" in line and "it is unchanged" in line
    assert snapshot(old_kb) == files and search_results(old_kb) == before


def test_a_second_writer_is_refused_before_any_work_and_a_killed_one_holds_nothing(
    good_kb, old_kb, tiny_release, corpora, capsys, monkeypatch
):
    files = snapshot(old_kb)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from modeling_paircap.file_io_paircap import folder_lock\n"
         "with folder_lock(sys.argv[1]):\n    print('held', flush=True); sys.stdin.read()", str(old_kb)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr("datasets_scripts.build_kb.read_pairs", lambda *_: pytest.fail("read before the lock"))
        assert main(build_arguments(tiny_release[0], corpora, old_kb, good_kb[1])) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"{old_kb}: another process (pid {holder.pid}) is writing it" in line
        assert snapshot(old_kb) == {**files, ".kb.lock": f"{holder.pid}\n".encode()}
    finally:
        holder.send_signal(signal.SIGKILL)  # killed: no chance to clean up
        holder.wait()
    with folder_lock(old_kb):  # the lock died with its holder
        pass
    assert snapshot(old_kb) == files


@pytest.mark.parametrize("flock", [True, False], ids=["flock", "exclusive-file"])
def test_two_writers_in_one_process_exclude_each_other(flock, tmp_path, monkeypatch):
    if not flock:  # the lock of systems without fcntl (Windows): an exclusively created file
        monkeypatch.setattr(file_io, "fcntl", None)
    target, held, release = tmp_path / "kb", threading.Event(), threading.Event()

    def writer():
        with replacing_folder(target) as staging:
            (staging / "a").write_text("first")
            held.set()
            release.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert held.wait(30)
        locked = f"another process \\(pid {os.getpid()}\\) is writing it"
        with pytest.raises(FolderWriteError, match=locked), folder_lock(target):
            pass
    finally:
        release.set()
        thread.join()
    assert (target / "a").read_text() == "first" and sorted(os.listdir(tmp_path)) == ["kb"]


def read_only_file_system(monkeypatch, parent: Path) -> None:
    """Every file created in `parent` fails as on a read-only mount (root is not stopped by chmod)."""
    real_open = os.open

    def open_(path, flags, *args, **kwargs):
        if Path(path).parent == parent and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)


@pytest.mark.parametrize("place", ["read-only", "under-a-file"])
def test_an_unwritable_output_is_refused_before_any_work(place, tiny_release, corpora, tmp_path, capsys, monkeypatch):
    if place == "read-only":
        output = tmp_path / "mount" / "kb"
        output.parent.mkdir()
        read_only_file_system(monkeypatch, output.parent)
        reason = "Read-only file system"
    else:
        (tmp_path / "notes.txt").write_text("a file, not a folder")
        output, reason = tmp_path / "notes.txt" / "kb", "notes.txt is not a folder"
    monkeypatch.setattr("datasets_scripts.build_kb.read_pairs", lambda *_: pytest.fail("read before the check"))
    assert main(build_arguments(tiny_release[0], corpora, output, tmp_path / "work")) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{output}: cannot be written" in line and reason in line
    assert not (tmp_path / "work").exists()


def test_a_folder_that_is_not_a_kb_is_never_replaced(good_kb, tiny_release, corpora, tmp_path, capsys):
    folder = tmp_path / "my-notes"
    folder.mkdir()
    (folder / "thesis.tex").write_text("months of work")
    assert main(build_arguments(tiny_release[0], corpora, folder, good_kb[1])) == 2
    assert "holds other files and no paircap_kb.json" in one_error_line(capsys.readouterr().err)
    with pytest.raises(FolderWriteError, match="holds other files"):
        PairCapKnowledgeBase.from_pretrained(good_kb[0]).save_pretrained(folder)
    assert [path.name for path in folder.iterdir()] == ["thesis.tex"]


def test_a_writer_killed_mid_swap_leaves_the_old_version_for_the_next_writer(tmp_path):
    target = tmp_path / "kb"
    with replacing_folder(target) as staging:
        (staging / "version").write_text("1")
    (tmp_path / ".kb.staging").mkdir()  # killed after renaming the old version aside, before renaming the new one in
    (tmp_path / ".kb.staging" / "version").write_text("2")
    target.rename(tmp_path / ".kb.old")
    with folder_lock(target):
        assert (target / "version").read_text() == "1"
    assert sorted(os.listdir(tmp_path)) == ["kb"]
    with pytest.raises(RuntimeError, match="a writer's own failure"), replacing_folder(target) as staging:
        (staging / "version").write_text("3")
        raise RuntimeError("a writer's own failure")
    assert (target / "version").read_text() == "1" and sorted(os.listdir(tmp_path)) == ["kb"]


def test_save_pretrained_into_its_own_folder_and_a_failed_token_refresh(old_kb, tiny_release, corpora, monkeypatch):
    before = search_results(old_kb)
    PairCapKnowledgeBase.from_pretrained(old_kb).save_pretrained(old_kb)  # read from the folder it replaces
    assert search_results(old_kb) == before
    files = snapshot(old_kb)
    _, model, processor = tiny_release
    fill_disk_at_fsync(monkeypatch)
    with pytest.raises(FolderWriteError, match="No space left on device.*it is unchanged"):
        roots = {"absolute": "/"}  # the KB records absolute paths (of links into ../shared/data)
        refresh_tokens(old_kb, model, processor, roots, num_workers=0, progress=False)
    monkeypatch.undo()
    work = old_kb.parent / ".kb.tokens-work"  # the encoded shards stay, so a rerun resumes
    assert {name: data for name, data in snapshot(old_kb).items() if not name.startswith(work.name)} == files
    assert search_results(old_kb) == before


def test_the_build_log_counts_each_clip_once(good_kb):
    """7 clips x 5 captions in shards of 4 rows: clips straddle row shards, each is still encoded once."""
    _, work_dir, log = good_kb
    assert "embedded 35 pairs (7 unique clips," in log
    assert len(list((work_dir / "embed" / "shards").glob("clips-*.parquet"))) == 2  # 4 + 3 clips
