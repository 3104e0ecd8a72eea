"""Strict caption CSVs and the layouts the readers find: a broken row is an error naming file and line (never a merge
of rows), aac-datasets' AudioCaps and Clotho folders read as they are, and `paircap read` reports any failure in one
line with exit status 2. Everything is built in tmp_path (synthetic captions and tones)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from datasets_scripts.readers import (
    LayoutError,
    ReaderError,
    ReaderReport,
    read_audiocaps,
    read_autoacd,
    read_clotho,
    read_corpus,
)
from paircap.cli import main as paircap_main

AUDIOCAPS_HEADER = ["audiocap_id", "youtube_id", "start_time", "caption"]
CLOTHO_HEADER = ["file_name", *(f"caption_{i}" for i in range(1, 6))]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


def tone(path: Path, seconds: float = 1.0, rate: int = 32_000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)


def audiocaps_rows(count: int) -> list[list[str]]:
    """`count` rows of distinct clips, with captions of about 20 words and no quote character."""
    return [
        [str(1000 + i), f"clip{i:07d}", "30", f"row {i} a dog barks as cars pass and birds chirp " + "far away " * 6]
        for i in range(count)
    ]


def read_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """`paircap read ARGV`: exit status, stdout and stderr (of this call alone)."""
    capsys.readouterr()
    code = paircap_main(["read", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ----------------------------------------------------------------------------------------- strict CSVs


def test_one_unterminated_quote_in_50_rows_is_an_error_naming_its_line(tmp_path, capsys):
    """The issue's case: lenient parsing merged rows 6..50 into one caption of thousands of characters and kept 6
    clips, with exit status 0."""
    path = write_csv(tmp_path / "train.csv", AUDIOCAPS_HEADER, audiocaps_rows(50))
    lines = path.read_text().splitlines(keepends=True)
    assert lines[6].startswith("1005,clip0000005,30,")
    lines[6] = '1005,clip0000005,30,"row 5 opens a quote that never closes\n'
    path.write_text("".join(lines))
    with pytest.raises(ReaderError, match=r"train\.csv:7: unterminated quote"):
        read_audiocaps(tmp_path, "train", text_only=True)

    code, out, err = read_cli(capsys, "audiocaps", str(tmp_path), "train", "--text-only")
    assert code == 2 and out == ""
    assert err == (
        f"paircap read: error: {path}:7: unterminated quote: the quoted field opened on this line runs to the end of "
        "the file\n"
    )


def test_the_same_file_without_the_broken_quote_reads_every_row(tmp_path):
    write_csv(tmp_path / "train.csv", AUDIOCAPS_HEADER, audiocaps_rows(50))
    ds = read_audiocaps(tmp_path, "train", text_only=True)
    assert len(ds) == 50 and max(len(caption) for caption in ds["caption"]) < 120
    assert ReaderReport.from_dataset(ds).clips_kept == 50


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        # a quote opened on line 4 and closed by the first quote of line 6, followed by text: csv's own error
        (['1002,clip2,30,"opened here\n', "1003,clip3,30,plain\n", '1004,clip4,30,"and, closed" here\n'],
         r":4: malformed row \(',' expected after '\"', on line 6; an unterminated quote on line 4\?\)"),
        # a quoted field that runs over two lines: fine for the csv module, never in a caption file
        (['1002,clip2,30,"two\n', 'lines"\n'], r":4: a quoted field runs from line 4 to line 5"),
        (["1002,clip2,30,a dog, barks\n"], r":4: 5 fields where the header has 4 \(audiocap_id,youtube_id,start_time,"
                                           r"caption\) \(an unquoted comma\?\)"),
        (["1002,clip2,a dog barks\n"], r":4: 3 fields where the header has 4"),
        (['1002,clip2,30,"quoted" then more\n'], r":4: malformed row \(',' expected after '\"'\)"),
    ],
)  # fmt: skip
def test_malformed_rows_name_file_and_line(tmp_path, row, problem):
    path = write_csv(tmp_path / "val.csv", AUDIOCAPS_HEADER, audiocaps_rows(2))
    path.write_text(path.read_text() + "".join(row) + "1009,clip9,30,last row\n")
    with pytest.raises(ReaderError, match=r"val\.csv" + problem):
        read_audiocaps(tmp_path, "val", text_only=True)


def test_header_encoding_and_blank_lines(tmp_path):
    path = tmp_path / "test.csv"
    path.write_text("")
    with pytest.raises(ReaderError, match=r"test\.csv:1: empty file, no header line"):
        read_audiocaps(tmp_path, "test", text_only=True)
    path.write_text("audiocap_id,youtube_id,start_time,caption,caption\n1,a,0,x,y\n")
    with pytest.raises(ReaderError, match=r"test\.csv:1: column\(s\) \['caption'\] appear more than once"):
        read_audiocaps(tmp_path, "test", text_only=True)
    path.write_bytes(b"audiocap_id,youtube_id,start_time,caption\n1,a,0,fine\n2,b,0,caf\xe9 noise\n")
    with pytest.raises(ReaderError, match=r"test\.csv:3: not UTF-8 text"):
        read_audiocaps(tmp_path, "test", text_only=True)
    # blank lines (a trailing one included) are no rows; a BOM and CRLF line ends are fine
    path.write_bytes(b"\xef\xbb\xbfaudiocap_id,youtube_id,start_time,caption\r\n1,a,0,one\r\n\r\n2,b,0,two\r\n\r\n")
    assert read_audiocaps(tmp_path, "test", text_only=True)["caption"] == ["one", "two"]


def test_clotho_and_autoacd_are_strict_too(tmp_path):
    clotho = write_csv(tmp_path / "clotho" / "clotho_captions_evaluation.csv", CLOTHO_HEADER, [["a.wav", *"abcde"]])
    clotho.write_text(clotho.read_text() + 'b.wav,one,"two,three,four,five\nc.wav,1,2,3,4,5\n')
    with pytest.raises(ReaderError, match=r"clotho_captions_evaluation\.csv:3: unterminated quote"):
        read_clotho(tmp_path / "clotho", "evaluation", text_only=True)
    autoacd = write_csv(tmp_path / "autoacd" / "train.csv", ["youtube_id", "caption"], [["Yabcdefghijk", "fine"]])
    autoacd.write_text(autoacd.read_text() + "Ybcdefghijkl,a dog barks, in a yard\n")
    with pytest.raises(ReaderError, match=r"train\.csv:3: 3 fields where the header has 2"):
        read_autoacd(tmp_path / "autoacd", "train", text_only=True)


def test_wavcaps_json_errors_name_file_line_and_column(tmp_path, capsys):
    subset = tmp_path / "json_files" / "SoundBible"
    subset.mkdir(parents=True)
    (subset / "sb_final.json").write_text('{"data": [\n  {"id": "1", "caption": "a"},\n  {"id": "2" "caption": "b"}]}')
    with pytest.raises(ReaderError, match=r"sb_final\.json:3:14: not valid JSON"):
        read_corpus("wavcaps/sb", tmp_path, "train", text_only=True, blacklist=None)
    code, _, err = read_cli(capsys, "wavcaps/sb", str(tmp_path), "train", "--text-only", "--captions-csv", "x.csv")
    assert (
        code == 2
        and err
        == "paircap read: error: WavCaps captions are JSON files: captions_csv (--captions-csv) does not apply\n"
    )  # noqa: E501


# ----------------------------------------------------------------------------------------------- layouts


def aac_audiocaps(root: Path, split: str, layout: str) -> tuple[Path, list[list[str]]]:
    """AudioCaps as aac-datasets writes it: `new` = AUDIOCAPS/csv_files_v1/{split}.csv, `v1` = AUDIOCAPS/{split}.csv
    (both with AUDIOCAPS/audio_32000Hz/{split}/), `old` = AUDIOCAPS_32000Hz/{split}.csv with AUDIOCAPS_32000Hz/audio/
    {split}/; clips named {youtube_id}_{start_time}.flac, audio for the first two clips only."""
    rows = audiocaps_rows(3)
    base = root / ("AUDIOCAPS_32000Hz" if layout == "old" else "AUDIOCAPS")
    csv_path = base / ("csv_files_v1" if layout == "new" else "") / f"{split}.csv"
    write_csv(csv_path, AUDIOCAPS_HEADER, rows)
    audio = base / ("audio" if layout == "old" else "audio_32000Hz") / split
    for _, youtube_id, start, _ in rows[:2]:
        tone(audio / f"{youtube_id}_{start}.flac")
    return audio, rows


@pytest.mark.parametrize("layout", ["new", "v1", "old"])
def test_aac_datasets_audiocaps_layouts(tmp_path, capsys, layout):
    audio, rows = aac_audiocaps(tmp_path, "val", layout)
    for root in (tmp_path, audio.parents[1]):  # the aac-datasets root, or its AUDIOCAPS folder
        with pytest.warns(UserWarning, match="dropped 1 of 3 rows whose audio file is missing"):
            ds = read_corpus("audiocaps", root, "val")
        assert ds["audio_id"] == [rows[0][1], rows[1][1]]
        assert [Path(item["path"]).parent for item in ds["audio"]] == [audio, audio]
    code, out, _ = read_cli(capsys, "audiocaps", str(tmp_path), "val")
    assert code == 0 and json.loads(out)["rows_kept"] == 2


def test_aac_datasets_clotho_layout(tmp_path, capsys):
    base = tmp_path / "CLOTHO_v2.1"
    write_csv(base / "clotho_csv_files" / "clotho_captions_validation.csv", CLOTHO_HEADER, [["a b.wav", *"abcde"]])
    tone(base / "clotho_audio_files" / "validation" / "a b.wav", rate=44_100)
    for root in (tmp_path, base):
        ds = read_clotho(root, "val")
        assert len(ds) == 5 and Path(ds["audio"][0]["path"]) == base / "clotho_audio_files" / "validation" / "a b.wav"
    code, out, _ = read_cli(capsys, "clotho", str(tmp_path), "validation")
    assert code == 0 and json.loads(out)["rows_kept"] == 5


def test_flags_name_the_csv_and_audio_folder_of_any_layout(tmp_path, capsys):
    rows = audiocaps_rows(2)
    write_csv(tmp_path / "meta" / "audiocaps_2.0_val.csv", AUDIOCAPS_HEADER, rows)
    tone(tmp_path / "clips" / f"{rows[0][1]}.wav")
    tone(tmp_path / "more" / f"{rows[1][1]}.wav")
    argv = ["audiocaps", str(tmp_path), "val", "--captions-csv", "meta/audiocaps_2.0_val.csv"]
    code, out, _ = read_cli(capsys, *argv, "--audio-dir", "clips", "--audio-dir", str(tmp_path / "more"))
    assert code == 0 and json.loads(out)["rows_kept"] == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["audiocaps", "{root}", "val"],
         "no AudioCaps caption file for split 'val' under {root} (looked for val.csv, dataset/val.csv, "
         "csv_files_v1/val.csv, AUDIOCAPS/csv_files_v1/val.csv, AUDIOCAPS/val.csv, AUDIOCAPS_32000Hz/val.csv); name "
         "it with captions_csv=... (--captions-csv)"),
        (["clotho", "{root}", "evaluation", "--text-only"],
         "no Clotho caption file for split 'evaluation' under {root} (looked for clotho_captions_evaluation.csv, "
         "clotho_csv_files/clotho_captions_evaluation.csv, CLOTHO_v2.1/clotho_captions_evaluation.csv, "
         "CLOTHO_v2.1/clotho_csv_files/clotho_captions_evaluation.csv); name it with captions_csv=... "
         "(--captions-csv)"),
        (["audiocaps", "{root}/typo", "val"], "{root}/typo: no such folder"),
        (["audiocaps", "{root}", "val", "--captions-csv", "nope.csv"],
         "{root}/nope.csv: no such caption file (captions_csv, --captions-csv)"),
        (["audiocaps", "{root}", "dev"], "unknown AudioCaps split 'dev'; expected one of ['test', 'train', 'val']"),
        (["macs", "{root}", "train"],
         "unknown corpus 'macs'; expected one of ['audiocaps', 'autoacd', 'clotho', 'wavcaps'] or wavcaps/<subset>"),
        (["wavcaps/AudioSet_SL", "{root}", "train", "--text-only"],
         "no WavCaps caption JSON for subset AudioSet_SL under {root}/AudioSet_SL"),
    ],
)  # fmt: skip
def test_every_read_failure_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    code, out, err = read_cli(capsys, *(arg.format(root=tmp_path) for arg in argv))
    assert (code, out) == (2, "")
    assert err == f"paircap read: error: {message.format(root=tmp_path)}\n"


def test_missing_audio_folders_are_errors_not_empty_reads(tmp_path, capsys):
    write_csv(tmp_path / "clotho_captions_evaluation.csv", CLOTHO_HEADER, [["a.wav", *"abcde"]])
    with pytest.raises(LayoutError, match=r"clotho evaluation: no audio folder \(looked for .*/evaluation, "):
        read_clotho(tmp_path, "evaluation")
    assert len(read_clotho(tmp_path, "evaluation", text_only=True)) == 5
    code, _, err = read_cli(capsys, "clotho", str(tmp_path), "evaluation", "--audio-dir", "clips")
    assert (code, err) == (2, f"paircap read: error: no such audio folder: {tmp_path}/clips (audio_dir, --audio-dir)\n")


def test_debug_shows_the_traceback(tmp_path):
    from paircap.cli import UsageError

    with pytest.raises(UsageError) as raised:
        paircap_main(["read", "--debug", "audiocaps", str(tmp_path), "val"])
    assert isinstance(raised.value.__cause__, LayoutError)
