"""Layer 1: output formats and timestamp formatting."""

import json

import pytest

from qasr_edge.results import Segment, Transcript
from qasr_edge.writers import FORMATS, format_timestamp, render


def transcript():
    segs = [Segment(0, 0.0, 2.5, " Hello there.", [1, 2]), Segment(1, 2.5, 3661.04, " A --> B\tC", [3])]
    return Transcript(text="Hello there. A --> B\tC", language="en", language_probability=0.98,
                      duration=3662.0, segments=segs, audio="x.wav")


@pytest.mark.parametrize("seconds, srt, vtt", [
    (0.0, "00:00:00,000", "00:00.000"),
    (12.3456, "00:00:12,346", "00:12.346"),
    (59.9996, "00:01:00,000", "01:00.000"),
    (3661.04, "01:01:01,040", "01:01:01.040"),
])
def test_format_timestamp(seconds, srt, vtt):
    assert format_timestamp(seconds, ",", always_hours=True) == srt
    assert format_timestamp(seconds) == vtt


def test_negative_timestamp_rejected():
    with pytest.raises(ValueError):
        format_timestamp(-1.0)


def test_srt_and_vtt_cues():
    srt = render(transcript(), "srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n00:00:02,500 --> 01:01:01,040\n")
    assert "A -> B" in srt  # an arrow inside a cue would break the cue
    vtt = render(transcript(), "vtt")
    assert vtt.startswith("WEBVTT\n\n00:00.000 --> 00:02.500\nHello there.\n")


def test_tsv_milliseconds():
    rows = render(transcript(), "tsv").splitlines()
    assert rows[0] == "start\tend\ttext"
    assert rows[1] == "0\t2500\tHello there."
    assert rows[2].split("\t") == ["2500", "3661040", "A --> B C"]


def test_json_and_jsonl_round_trip():
    for fmt in ("json", "jsonl"):
        data = json.loads(render(transcript(), fmt))
        assert data["text"] == "Hello there. A --> B\tC" and data["audio"] == "x.wav"
        assert [s["tokens"] for s in data["segments"]] == [[1, 2], [3]]
        assert set(data["segments"][0]) >= {"start", "end", "text", "tokens"}
    assert render(transcript(), "jsonl").count("\n") == 1


def test_failed_transcript_carries_error():
    data = json.loads(render(Transcript.failed("bad.wav", "bad.wav: empty file"), "jsonl"))
    assert data["error"] == "bad.wav: empty file" and data["text"] == ""


def test_every_format_renders():
    for fmt in FORMATS:
        assert render(transcript(), fmt).endswith("\n")
    with pytest.raises(ValueError):
        render(transcript(), "docx")
