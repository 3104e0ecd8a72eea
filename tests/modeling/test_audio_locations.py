"""The containment rule for a knowledge base's clip locations (`modeling_paircap/audio_locations_paircap.py`): a clip's
audio is read only inside the folder given for its root after links are resolved, absolute paths only with the opt-in
`absolute` root, and only files that begin like audio; `paircap kb tokens` applies the same rule before any work."""

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf

from datasets_scripts.clip_tokens import clip_locations
from modeling_paircap.audio_locations_paircap import (
    ABSOLUTE_ROOT,
    AudioLocationError,
    audio_file_format,
    clip_audio_location,
    sniff_audio,
)
from modeling_paircap.kb_format_paircap import KnowledgeBaseError, clip_schema

SECRET = "HF_TOKEN=hf_not_a_real_token\n"


@pytest.fixture
def layout(tmp_path) -> tuple[Path, Path]:
    """(root, outside): a clip folder with good, linked, disguised and escaping entries, and a folder beside it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    tone = (0.1 * np.sin(np.arange(4800) / 10)).astype(np.float32)
    sf.write(root / "good.wav", tone, 48000)
    sf.write(root / "sub" / "deep.flac", tone, 48000)
    sf.write(outside / "other.flac", tone, 48000)  # audio, but outside the root
    (outside / "secret.txt").write_text(SECRET)
    (root / "inside.wav").symlink_to(root / "sub" / "deep.flac")
    (root / "link_out.flac").symlink_to(outside / "other.flac")
    (root / "link_secret.wav").symlink_to(outside / "secret.txt")
    (root / "notes.wav").write_text("a text file named like audio\n")
    os.mkfifo(root / "pipe.wav")
    return root, outside


def refused(root: str, path: str, roots: dict, reason: str) -> None:
    with pytest.raises(AudioLocationError, match=reason):
        clip_audio_location(root, path, roots)


def test_a_clip_inside_its_root_is_its_resolved_file(layout):
    root, _ = layout
    roots = {"corpus": root}
    assert clip_audio_location("corpus", "good.wav", roots) == str((root / "good.wav").resolve())
    assert clip_audio_location("corpus", "sub/../good.wav", roots) == str((root / "good.wav").resolve())
    assert clip_audio_location("corpus", "inside.wav", roots) == str((root / "sub" / "deep.flac").resolve())
    link = root.parent / "root-link"  # the root folder itself may be a link: it is resolved too
    link.symlink_to(root)
    assert clip_audio_location("corpus", "sub/deep.flac", {"corpus": link}) == str((root / "sub/deep.flac").resolve())


def test_nothing_recorded_or_no_folder_given_is_none_and_a_url_is_kept(layout):
    root, _ = layout
    assert clip_audio_location("corpus", None, {"corpus": root}) is None
    assert clip_audio_location("corpus", "", {"corpus": root}) is None
    assert clip_audio_location("elsewhere", "good.wav", {"corpus": root}) is None
    assert clip_audio_location("", "https://example.org/a.flac", {}) == "https://example.org/a.flac"


def test_dot_dot_escapes_are_refused_even_for_audio(layout):
    root, outside = layout
    roots = {"corpus": root}
    refused("corpus", "../outside/secret.txt", roots, "outside root 'corpus'")
    refused("corpus", "../outside/other.flac", roots, "outside root 'corpus'")
    refused("corpus", "sub/../../outside/other.flac", roots, "outside root 'corpus'")
    refused("corpus", "../" * 30 + "etc/passwd", roots, "outside root 'corpus'")


def test_an_absolute_path_under_a_root_is_refused_instead_of_replacing_the_root(layout):
    root, outside = layout
    refused("corpus", str(outside / "other.flac"), {"corpus": root}, "an absolute path, not one relative to its root")
    refused("corpus", "/etc/passwd", {"corpus": root}, "an absolute path")
    refused("corpus", "C:\\Windows\\win.ini", {"corpus": root}, "an absolute path")


def test_absolute_paths_need_the_opt_in_and_then_lie_inside_its_folder(layout):
    root, outside = layout
    other, secret = str(outside / "other.flac"), str(outside / "secret.txt")
    assert clip_audio_location("", other, {"corpus": root}) is None  # not opted in: not read
    refused("", other, {ABSOLUTE_ROOT: root}, "outside the folder allowed for absolute paths")
    assert clip_audio_location("", other, {ABSOLUTE_ROOT: outside}) == str(Path(other).resolve())
    assert clip_audio_location("", other, {ABSOLUTE_ROOT: "/"}) == str(Path(other).resolve())  # any, when asked for
    refused("", secret, {ABSOLUTE_ROOT: "/"}, "not an audio file")  # still only audio
    refused("", "/etc/passwd", {ABSOLUTE_ROOT: "/"}, "not an audio file")
    refused("", "relative/clip.wav", {ABSOLUTE_ROOT: "/"}, "neither an absolute path nor a URL")


def test_symbolic_links_out_of_the_root_are_refused(layout):
    root, _ = layout
    roots = {"corpus": root}
    refused("corpus", "link_out.flac", roots, "a symbolic link out of root 'corpus'")
    refused("corpus", "link_secret.wav", roots, "a symbolic link out of root 'corpus'")


def test_only_regular_files_that_begin_like_audio_are_read(layout):
    root, _ = layout
    roots = {"corpus": root}
    refused("corpus", "notes.wav", roots, "not an audio file")
    refused("corpus", "sub", roots, "not a regular file")
    refused("corpus", "pipe.wav", roots, "not a regular file")  # never opened: a FIFO would block the reader
    refused("corpus", "missing.wav", roots, "no such file")
    refused("corpus", "good.wav\x00.txt", roots, "NUL")
    refused("corpus", "good.wav", {"corpus": root / "nowhere"}, "the folder given for root 'corpus' does not exist")


def test_the_sniffed_formats(tmp_path):
    tone = np.zeros(4800, np.float32)
    for name, kind in [("a.wav", "wav"), ("a.flac", "flac"), ("a.ogg", "ogg"), ("a.mp3", "mp3"), ("a.aiff", "aiff")]:
        sf.write(tmp_path / name, tone, 48000)
        assert audio_file_format(tmp_path / name) == kind, name
    assert sniff_audio(b"\x00\x00\x00\x20ftypM4A \x00\x00") == "m4a"
    assert sniff_audio(b"\xff\xfb\x90\x64") == "mp3"  # an MPEG-1 layer III frame without ID3
    assert sniff_audio(b"\xff\xf1\x50\x80") == "aac"  # ADTS
    assert sniff_audio(b"\x1a\x45\xdf\xa3\x01") == "webm"
    for head in [
        SECRET.encode(),
        b'{"key": 1}',
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff\xe0",  # JPEG
        b"\xff\xfeh\x00i\x00",  # UTF-16 text
        b"\x7fELF\x02\x01",
        b"\x00\x00\x00\x18ftypheic",  # an image in an MP4-family box
        b"RIFF\x00\x00\x00\x00AVI ",
        b"",
    ]:
        assert sniff_audio(head) is None, head


def test_kb_tokens_refuses_escaping_locations_before_any_work(layout, tmp_path):
    root, outside = layout

    def clips(rows):
        return pa.table(
            {
                "audio_id": [f"c{i}" for i in range(len(rows))],
                "is_long": [False] * len(rows),
                "duration": [1.0] * len(rows),
                "audio_root": [r for r, _ in rows],
                "audio_path": [p for _, p in rows],
            },
            schema=clip_schema(),
        )

    good = clips([("corpus", "good.wav"), ("corpus", "inside.wav")])
    assert clip_locations(good, {"corpus": root}, tmp_path) == [
        str((root / "good.wav").resolve()),
        str((root / "sub" / "deep.flac").resolve()),
    ]
    crafted = clips(
        [("corpus", "good.wav"), ("", str(outside / "secret.txt")), ("corpus", "../outside/secret.txt"),
         ("corpus", "link_out.flac"), ("corpus", "notes.wav")]
    )  # fmt: skip
    with pytest.raises(KnowledgeBaseError, match=r"\['absolute'\]: pass --root absolute=DIR"):
        clip_locations(crafted, {"corpus": root}, tmp_path)
    with pytest.raises(KnowledgeBaseError, match=r"the audio of 4 clips is refused: clip 1: .*not an audio file.*"
                       r"clip 2: .*outside root 'corpus'.*clip 3: .*symbolic link out.*and 1 more"):  # fmt: skip
        clip_locations(crafted, {"corpus": root, ABSOLUTE_ROOT: "/"}, tmp_path)
