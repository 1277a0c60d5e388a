"""Streaming sessions: pure pieces (commit policies, endpointing, events), then whisper-base and a
tiny Qwen3-ASR fed as live streams: the same finals whatever the feed granularity, reuse on and
off giving the same tokens, silence giving no text, well-formed events, many streams batched."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import threading
import types
from pathlib import Path

import jiwer
import numpy as np
import pytest

import qasr_edge
from qasr_edge.audio import load_audio
from qasr_edge.search import Decoded, Hypothesis
from qasr_edge.streaming import FINISH, StreamEvent, StreamOptions, StreamScheduler
from qasr_edge.streaming.agreement import (WordStarts, agreement, before_loop, complete_words, confident_words, restated,
                                          rollback, spelled_through)
from qasr_edge.streaming.endpoint import Endpointer
from qasr_edge.streaming.session import drive
from qasr_edge.streaming.whisper import DETECT_SECONDS, parse_hypothesis

import qwen3_tiny as tiny

FIXTURES = Path(__file__).parent / "fixtures"
CLIPS = json.loads((FIXTURES / "fixtures.json").read_text())
SR = 16000


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def run(session, audio: np.ndarray, piece: int) -> list[StreamEvent]:
    events = []
    for i in range(0, len(audio), piece):
        events += session.feed(audio[i:i + piece])
    return events + session.finish()


def finals(events) -> list[tuple[int, ...]]:
    return [e.tokens for e in events if e.type == "final"]


def text(events) -> str:
    return "".join(e.text for e in events if e.type == "final").strip()


def reference(clip: str) -> str:
    return next(c["text"] for c in CLIPS["clips"] if c["file"] == clip)


def assert_well_formed(events, duration: float) -> None:
    last_end, last_emit = 0.0, 0.0
    for e in events:
        assert e.type in ("partial", "final")
        assert e.text and 0.0 <= e.start <= e.end <= duration + 0.05, e
        assert e.emitted_at >= last_emit and e.emitted_at <= duration + 1e-6, e
        last_emit = e.emitted_at
        if e.type == "final":
            assert e.start >= last_end - 1e-6, "finals arrive in order"
            last_end = e.end
        d = e.to_dict()
        assert set(d) >= {"type", "text", "start", "end", "emitted_at", "language"}
        json.dumps(d)


# --- pure pieces ----------------------------------------------------------------------------

def starts_word(t: int) -> bool:
    return t >= 100   # in these tests, ids >= 100 begin a word


def test_local_agreement_commits_whole_agreed_words():
    prev = [100, 5, 101, 102, 6]
    # (commit, agreed): "100 5" is whole, as 101 follows; 101 agrees too but may go on
    assert agreement(prev, [100, 5, 101, 103], starts_word) == (2, 3)
    assert agreement(prev, [100, 5, 101, 102, 7], starts_word) == (3, 4)
    assert agreement(prev, [104, 5], starts_word) == (0, 0)
    assert agreement([], [100, 101], starts_word) == (0, 0)
    assert complete_words([100, 101, 102], 3, starts_word) == 2
    assert rollback([100, 101, 102, 103, 104, 105], 2, starts_word) == 4
    assert rollback([100, 5, 5, 5], 1, starts_word) == 0               # one word still open: nothing


# spelled words for the spelling-aware policy: ids >= 100 begin a word; 1 is "," (no letters)
SPELLING = {100: " our", 101: " club", 102: " will", 103: " drive", 105: " Our", 106: " to", 1: ",", 2: "s"}


def spelling(tokens) -> str:
    return "".join(c for c in "".join(SPELLING[t] for t in tokens).lower() if c.isalnum())


def test_words_agree_when_spelled_the_same_case_and_punctuation_aside():
    prev = [100, 101, 102, 103]                              # " our club will drive"
    cur = [1, 105, 101, 1, 102, 103, 106]                    # ", Our club, will drive to"
    assert agreement(prev, cur, starts_word) == (0, 0)     # as tokens they differ from the first
    assert agreement(prev, cur, starts_word, spelling) == (5, 6)         # "drive" ends prev: still open
    assert agreement(prev + [106], cur, starts_word, spelling) == (6, 7)     # both go on past "drive"
    assert agreement(prev[:3], cur, starts_word, spelling) == (4, 5)
    assert agreement([100, 101, 2], [100, 101, 102], starts_word, spelling) == (1, 1)   # "clubs" != "club"
    assert agreement([], cur, starts_word, spelling) == (0, 0)


def test_text_that_begins_with_the_last_words_said_restates_them():
    said = [103, 106, 100, 101, 102, 103]                          # " drive to our club will drive"
    assert restated(said, [100, 101, 102, 103, 106], starts_word, spelling) == 4   # the last 4 words again
    assert restated(said, [1, 105, 101, 1, 102, 103, 106], starts_word, spelling) == 6   # spelled ", Our club, ..."
    assert restated(said, [103, 106, 100, 101, 102, 103, 101], starts_word, spelling) == 6   # the longest tail
    assert restated(said, [101, 102, 103, 106], starts_word, spelling) == 0   # 3 words: speech may repeat them
    assert restated(said, [101, 102, 103], starts_word, spelling, min_words=3) == 3
    assert restated(said, [106, 100, 101, 102], starts_word, spelling) == 0   # a phrase of the middle, not the end
    assert restated([], [100, 101, 102, 103], starts_word, spelling) == 0
    assert restated(said, [], starts_word, spelling) == 0


def test_committed_text_spelled_differently_is_found_by_its_letters():
    # "our club" was committed; this hypothesis spells it ", Our club, will"
    cur = [1, 105, 101, 1, 102]
    assert spelled_through(cur, len(spelling([100, 101])), spelling) == 3    # through " club"
    assert spelled_through(cur, 0, spelling) == 0
    assert spelled_through(cur, 3, spelling) == 2                          # ", Our"
    assert spelled_through(cur, 99, spelling) == 5                         # never: all of it
    assert spelled_through([], 1, spelling) == 0


def test_confident_words_commit_whole_and_stop_at_the_first_doubt():
    tokens = [100, 2, 101, 102, 103]
    probs = [0.99, 0.95, 0.97, 0.5, 0.99]
    ends = [0.2, 0.4, 0.8, 1.2, 1.6]
    assert confident_words(tokens, probs, ends, 0, starts_word, 0.9, 10.0) == 3    # stops at "will" (0.5)
    assert confident_words(tokens, probs, ends, 0, starts_word, 0.9, 0.5) == 2     # "club" ends too late
    assert confident_words(tokens, probs, ends, 3, starts_word, 0.4, 10.0) == 4    # "drive" is the last: open
    assert confident_words(tokens, probs, ends, 0, starts_word, 0.96, 10.0) == 0   # "our" has a 0.95 token


def test_a_phrase_said_twice_in_a_row_is_a_loop_and_its_repeat_is_not_committed():
    loop = [105, 100, 5, 101, 102, 103]                   # "105 100. 101 102 103": 5 words, one with a tail
    assert before_loop([], loop + loop + [104], 13, starts_word) == 6            # commit the first copy only
    assert before_loop(loop, loop + [104], 7, starts_word) == 0                  # the first copy was committed
    assert before_loop(loop, loop + [104], 3, starts_word) == 3                  # no whole repeat within the 3
    assert before_loop([], [100, 101, 102] * 2, 6, starts_word) == 6             # 3 words twice: speech, not a loop
    assert before_loop([100, 101, 102, 103, 100, 101, 102], [103, 104], 2, starts_word) == 2   # repeat began before
    assert before_loop([], [100, 101, 102, 103, 104, 100, 101, 102, 103, 104], 10, starts_word, min_words=6) == 10
    assert before_loop([], [], 0, starts_word) == 0


def test_endpointer_hysteresis_and_padding():
    ep = Endpointer(512, threshold=0.5, endpoint_ms=320, pad_ms=64)    # 10 quiet frames end it, 2 frames pad
    probs = np.array([0.1] * 5 + [0.9] * 20 + [0.4] * 3 + [0.9] * 5 + [0.1] * 12, dtype=np.float32)
    ended = ep.push(probs)
    assert len(ended) == 1 and ep.current is None
    assert ended[0].start == (5 - 2) * 512                       # speech onset minus the pad
    assert ended[0].end == (33 + 2) * 512                        # 0.4 is above the low threshold: still speech
    assert ep.push(np.array([0.9], np.float32)) == [] and ep.in_speech


def test_hypothesis_times_from_timestamps():
    tb = 1000
    h = parse_hypothesis([tb + 0, 1, 2, tb + 50, tb + 50, 3, tb + 100, 4], tb, 3.0, lambda t: 1)
    assert h.tokens == [1, 2, 3, 4]
    assert np.allclose(h.ends, [0.5, 1.0, 2.0, 3.0]) and np.allclose(h.starts, [0.0, 0.5, 1.0, 2.0])
    assert h.segment_ends == [2, 3] and np.allclose(h.segment_times, [1.0, 2.0])
    h = parse_hypothesis([tb + 0, 1, 2, tb + 50, 3], tb, 3.0, lambda t: 1, probs=[1.0, 0.5, 0.6, 0.9, 0.7])
    assert h.probs == [0.5, 0.6, 0.7]                     # the text tokens' probabilities, in order


def test_timestamp_rules_keep_the_text_from_ending_before_a_given_timestamp():
    """With `min_final_index`, end-of-text is barred until a timestamp at least that late; a
    timestamp pair closed there (or later) may end the text, and without the bound any may."""
    from qasr_edge.families.whisper.rules import TimestampRules
    from qasr_edge.families.whisper.tokens import WhisperTokens
    t = WhisperTokens(eot=10, sot=11, translate=12, transcribe=13, sot_prev=14, sot_lm=15, no_speech=16,
                      no_timestamps=17, timestamp_begin=20, languages={"en": 18})
    ts = t.timestamp_begin
    rows = [[ts, 3, 4], [ts, 3, 4, ts + 30], [ts, 3, 4, ts + 50], [ts, 3, 4, ts + 30, ts + 30, 5]]

    def eot_allowed(rule):
        logits = np.full((len(rows), ts + 100), -10.0, np.float32)
        logits[:, :ts] = 10.0                    # text likelier than any timestamp: none is forced
        rule(logits, rows)
        return [bool(np.isfinite(x)) for x in logits[:, t.eot]]

    assert eot_allowed(TimestampRules(t, None, 50)) == [False, False, True, False]
    assert eot_allowed(TimestampRules(t, None)) == [True] * 4


def test_whisper_stream_updates_may_not_end_before_the_audio_they_heard(whisper, english, monkeypatch):
    """Inside an utterance the decoder may not end the text more than END_MARGIN_S (and the
    rounding of the window) before the audio heard ends; the utterance's last decode may."""
    import qasr_edge.streaming.whisper as ws
    bounds = []
    decode = ws.decode_windows

    def spy(model, options, items):
        size = items[0][0].shape[-2] * 2                 # mel frames of the encoder window
        bounds.append((options.min_final_timestamp, size))
        return decode(model, options, items)

    monkeypatch.setattr(ws, "decode_windows", spy)
    events = run(whisper.stream(chunk_ms=640), english, 10240)
    assert text(events)
    inside = [(b, size) for b, size in bounds if b is not None]
    assert inside and any(b is None for b, _ in bounds)
    assert all(b == max(0.0, round((size - 600) / 100 - ws.END_MARGIN_S, 2)) for b, size in inside)


def test_options_and_events_are_checked():
    with pytest.raises(ValueError):
        StreamOptions(chunk_ms=645)
    with pytest.raises(ValueError):
        StreamOptions(max_segment_s=40)
    with pytest.raises(ValueError, match="commit_prob"):
        StreamOptions(commit_prob=0.0)
    with pytest.raises(TypeError, match="chunk_size"):
        StreamOptions.from_kwargs(chunk_size=3)
    with pytest.raises(ValueError):
        StreamEvent("draft", "x", 0, 1, None, 1)
    assert StreamOptions(chunk_ms=320).chunk_samples == 5120


# --- whisper-base ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def whisper(whisper_base_package):
    return qasr_edge.load_model(whisper_base_package, threads=2)


@pytest.fixture(scope="module")
def english():
    return load_audio(FIXTURES / "en_weather.wav")


@pytest.fixture(scope="module")
def whisper_640(whisper, english):
    return run(whisper.stream(chunk_ms=640), english, 10240)


def test_whisper_stream_is_accurate_and_well_formed(whisper, whisper_640, english):
    ref = next(c["text"] for c in CLIPS["clips"] if c["file"] == "en_weather.wav")
    offline = whisper.transcribe(english)[0].text
    streamed = text(whisper_640)
    assert jiwer.wer(normalise(offline), normalise(streamed)) <= 0.15, (offline, streamed)
    assert jiwer.wer(normalise(ref), normalise(streamed)) <= 0.25, (ref, streamed)
    assert_well_formed(whisper_640, len(english) / SR)
    assert any(e.type == "partial" for e in whisper_640)
    assert {e.language for e in whisper_640} == {"en"}
    # finals come before the end of the audio: the stream commits while it listens
    assert min(e.emitted_at for e in whisper_640 if e.type == "final") < len(english) / SR - 1.0


@pytest.mark.parametrize("piece", [1, 160, "all"])
def test_whisper_finals_do_not_depend_on_feed_granularity(whisper, whisper_640, english, piece):
    audio = english[:4 * SR] if piece == 1 else english   # one sample at a time is slow in Python
    reference = whisper_640 if piece != 1 else run(whisper.stream(chunk_ms=640), audio, 10240)
    got = run(whisper.stream(chunk_ms=640), audio, len(audio) if piece == "all" else piece)
    assert finals(got) == finals(reference)
    assert [(e.type, e.emitted_at) for e in got] == [(e.type, e.emitted_at) for e in reference]


def test_vad_stream_gives_the_detectors_probabilities_in_any_pieces(whisper, english):
    from qasr_edge.vad import VadStream

    detector = whisper.family.vad
    whole = english[:len(english) // 512 * 512]
    stream = VadStream(detector)
    pieces = np.concatenate([stream.accept(whole[i:i + 1000]) for i in range(0, len(whole), 1000)])
    np.testing.assert_array_equal(pieces, detector.probabilities(whole))
    assert stream.frames_done == len(whole) // 512 and pieces.max() > 0.9 and pieces.min() < 0.1


def test_vad_sequence_graph_matches_silero_frame_by_frame(whisper, english):
    """Packages carry Silero's sequence graph, run over all the frames a call completes; it must
    give what Silero's one-frame graph gives called frame by frame, each frame after the 64
    samples before it (as Silero's own loop runs it; packages before format 5 carry that graph)."""
    import copy
    from importlib.util import find_spec

    import onnxruntime as ort

    detector = whisper.family.vad
    assert detector.sequence
    data = Path(next(iter(find_spec("silero_vad").submodule_search_locations))) / "data"
    one_frame = ort.InferenceSession(str(data / "silero_vad_16k_op15.onnx"), providers=["CPUExecutionProvider"])
    audio = english[:6 * SR]
    state, before, expected = np.zeros((2, 1, 128), np.float32), np.zeros(64, np.float32), []
    for start in range(0, len(audio) - 511, 512):
        frame = audio[start:start + 512]
        p, state = one_frame.run(None, {"input": np.concatenate([before, frame])[None], "state": state,
                                        "sr": np.array(SR, np.int64)})
        expected.append(p[0, 0])
        before = frame[-64:]
    np.testing.assert_allclose(detector.probabilities(audio[:len(expected) * 512]), expected, atol=1e-5)
    older = copy.copy(detector)   # a package before format 5: the one-frame graph
    older.sequence, older._path, older._session = False, data / "silero_vad_16k_op15.onnx", None
    np.testing.assert_allclose(older.probabilities(audio[:len(expected) * 512]), expected, atol=1e-6)


def test_whisper_silence_and_noise_give_no_text(whisper):
    rng = np.random.default_rng(0)
    quiet = np.concatenate([np.zeros(3 * SR), 0.003 * rng.standard_normal(4 * SR)]).astype(np.float32)
    assert run(whisper.stream(), quiet, 10240) == []


def test_whisper_stream_survives_bad_chunks(whisper, whisper_640, english):
    s = whisper.stream(chunk_ms=640)
    events = []
    for i in range(0, len(english), 10240):
        with pytest.raises(TypeError):
            s.feed(np.ones(100, dtype=np.int32))
        with pytest.raises(ValueError):
            s.feed(np.full(10, np.nan, dtype=np.float32))
        events += s.feed(english[i:i + 10240])
    events += s.finish()
    assert finals(events) == finals(whisper_640)
    with pytest.raises(RuntimeError):
        s.feed(english[:100])


def test_int16_pcm_is_accepted(whisper, english):
    pcm = np.clip(english * 32768, -32768, 32767).astype(np.int16)
    got = run(whisper.stream(chunk_ms=640), pcm, 10240)
    assert normalise(text(got)) and jiwer.wer(normalise(text(got)), normalise(text(
        run(whisper.stream(chunk_ms=640), pcm.astype(np.float32) / 32768, 10240)))) == 0


def test_long_stream_commits_in_utterances(whisper, monkeypatch):
    graphs = whisper.family.graphs
    windows = []
    encode = graphs.encode
    monkeypatch.setattr(graphs, "encode", lambda mel, *a: windows.append(mel.shape[2]) or encode(mel, *a))
    audio = load_audio(FIXTURES / "long_en.wav")
    events = run(whisper.stream(chunk_ms=640), audio, 10240)
    assert_well_formed(events, len(audio) / SR)
    ref = " ".join(CLIPS["long"]["sentences"])
    assert jiwer.wer(normalise(ref), normalise(text(events))) <= 0.15
    lags = [e.emitted_at - e.end for e in events if e.type == "final"]
    assert len(lags) >= 12 and np.median(lags) < 3.0   # commits follow the speech, not the end of the file
    # the buffer is trimmed at the ends of committed segments once past TRIM_SECONDS, so it stays
    # under 15 s (windows of at most 20 s with the padding); it never runs on to max_segment_s
    assert max(windows) <= 2000


def test_whisper_stream_encodes_the_buffer_not_30_s(whisper, english, monkeypatch):
    graphs = whisper.family.graphs
    seen = []
    encode = graphs.encode
    monkeypatch.setattr(graphs, "encode", lambda mel, *a: seen.append(mel.shape[2]) or encode(mel, *a))
    events = run(whisper.stream(chunk_ms=640), english, 10240)
    # the buffer (at most the clip's 5 s) and 5 s or more of padding, rounded up to 1 s
    # (streaming.whisper.WINDOW_STEP): the window grows with the buffer
    assert text(events) and all(w % 100 == 0 and 600 <= w <= 1100 for w in seen) and len(set(seen)) >= 4
    assert seen == sorted(seen)
    # offline windows round up to 5 s, so that windows of similar lengths share a batch
    assert [graphs.window_frames(n) for n in (2, 500, 501)] == [1000, 1000, 1500]
    assert [graphs.window_frames(n, 100) for n in (2, 100, 101, 2600)] == [600, 600, 700, 3000]
    with pytest.raises(ValueError, match="even"):
        graphs.window_frames(100, 99)
    seen.clear()
    # a package exported before dims.variable_audio_ctx: Whisper's 30 s windows
    monkeypatch.setattr(graphs, "variable_audio_ctx", False)
    run(whisper.stream(chunk_ms=640), english[:2 * SR], 10240)
    assert seen and set(seen) == {3000}
    with pytest.raises(ValueError, match="exactly 3000"):
        encode(np.zeros((1, 80, 1000), np.float32))


def test_whisper_stream_pads_its_window_with_silence(whisper, english, monkeypatch):
    """The padding after the buffer is the log-mel floor, 8 log10 units (2 after normalising) under
    the loudest frame, which Whisper's reference gives zero samples; not zeros after normalising."""
    graphs = whisper.family.graphs
    windows = []
    encode = graphs.encode
    monkeypatch.setattr(graphs, "encode", lambda mel, *a: windows.append(mel[0].copy()) or encode(mel, *a))
    run(whisper.stream(chunk_ms=640), english, 10240)
    assert windows
    for mel in windows:
        pad = mel[:, -500:]                          # the last 5 s of a window are always padding
        assert np.all(pad == pad[0, 0]) and pad[0, 0] == mel.min()
        assert pad[0, 0] == pytest.approx(mel.max() - 2.0, abs=1e-5)


def test_whisper_waits_for_a_sure_language_until_detect_seconds(whisper, english, monkeypatch):
    """An unsure language detection decodes nothing while the utterance is short, unless it names
    the language the stream spoke last; once it has DETECT_SECONDS of audio the stream goes on
    with what the detector says."""
    monkeypatch.setattr(whisper.family, "detect_language",
                        lambda cross: [[("en", 0.3), ("pl", 0.2)]] * cross.shape[2])
    again = len(english) / SR + 2.5                        # a second utterance after 2.5 s of silence
    audio = np.concatenate([english, np.zeros(int(2.5 * SR), np.float32), english])
    events = run(whisper.stream(chunk_ms=640), audio, 10240)
    first = [e.emitted_at for e in events if e.emitted_at < again]
    assert DETECT_SECONDS <= min(first) < len(english) / SR     # it waited, and not to the end
    said = "tomorrow the weather will be sunny in the morning and rain in the afternoon"
    assert jiwer.wer(said, normalise(text([e for e in events if e.emitted_at < again]))) <= 0.25
    # the second utterance, detected as unsurely as the first, says the stream's language: no wait
    assert min(e.emitted_at for e in events if e.emitted_at >= again) < again + DETECT_SECONDS - 1.0


def decoded(tokens: list[int], logprobs: list[float], looped: bool = False) -> Decoded:
    """One update's search result, as the decoder would give it (no fallback, speech)."""
    return Decoded([Hypothesis(tokens, logprobs, float(sum(logprobs)), not looped, looped)], 0.0, -0.1, 1.0, 0.0)


def test_whisper_commits_no_more_text_than_the_audio_can_hold(whisper):
    """At an utterance's end, a scrap of audio decoded as a whole sentence (the decoder said its
    prompt again) gives no final; the same text over 3 s of audio does."""
    t = whisper.family.tokens
    tokens = [t.timestamp_begin] + whisper.family.tokenizer.encode(" We will bring two large telescopes and hot tea.")
    hypothesis = decoded(tokens, [-0.1] * len(tokens))
    stream = whisper.family.open_stream(StreamOptions(beam_size=1))
    assert stream._commit(hypothesis, 0, 30, True) == []
    assert [e.type for e in stream._commit(hypothesis, 0, 300, True)] == ["final"]


def test_whisper_commits_a_closed_segment_once_two_hypotheses_agree(whisper):
    """The last word of a segment the decoder closed with a timestamp is whole: the second
    agreeing hypothesis commits all of it (without the rule only " Hello" would be, since no
    next word shows that "world." ended)."""
    stream = whisper.family.open_stream(StreamOptions(beam_size=1))
    t = whisper.family.tokens
    text_ids = whisper.family.tokenizer.encode(" Hello world.")
    tokens = [t.timestamp_begin] + text_ids + [t.timestamp_begin + 50]   # <|0.00|> Hello world.<|1.00|>
    unsure = [np.log(0.5)] * len(tokens)                   # below commit_prob: agreement decides
    hypothesis = decoded(tokens, unsure)
    assert [e.type for e in stream._commit(hypothesis, 0, 150, False)] == ["partial"]
    events = stream._commit(hypothesis, 0, 150, False)
    assert [(e.type, e.text) for e in events] == [("final", " Hello world.")]


def test_whisper_keeps_the_last_words_through_a_hypothesis_that_said_nothing_more(whisper):
    """An update whose decoder closed the committed text and ended (it does so now and then with
    speech still to come) is no evidence against the words the update before it heard: the next
    hypothesis is compared with those, and commits what they agree on."""
    stream = whisper.family.open_stream(StreamOptions(beam_size=1))
    t = whisper.family.tokens
    encode = whisper.family.tokenizer.encode
    stamp = t.timestamp_begin + 50                                     # <|1.00|>

    def update(tokens, frames):
        events = stream._commit(decoded(tokens, [np.log(0.5)] * len(tokens)), 0, frames, False)
        return [(e.type, e.text) for e in events]

    hello = [t.timestamp_begin] + encode(" Hello world.") + [stamp]
    update(hello, 150)
    assert update(hello, 214) == [("final", " Hello world.")]        # the prefix is forced from here
    assert update([stamp, stamp] + encode(" The quick brown fox"), 278) == [("partial", " The quick brown fox")]
    assert update([stamp], 342) == []                                 # said nothing after the prefix
    assert stream.previous == encode(" The quick brown fox")
    assert update([stamp, stamp] + encode(" The quick brown fox jumps"), 406)[0] == ("final", " The quick brown")


def test_whisper_commits_nothing_of_a_looped_hypothesis_until_the_utterance_ends(whisper):
    """A hypothesis the search stopped in a loop is a failed decode (its text need not be
    repetitive enough for the compression check): the stream waits for more audio. At the
    utterance's end it commits what came before the loop, once."""
    t = whisper.family.tokens
    tokens = [t.timestamp_begin] + whisper.family.tokenizer.encode(" We found a copy.") * 3
    stream = whisper.family.open_stream(StreamOptions(beam_size=1))
    for _ in range(3):
        assert stream._commit(decoded(tokens, [0.0] * len(tokens), looped=True), 0, 400, False) == []
    finals = [e.text for e in stream._commit(decoded(tokens, [0.0] * len(tokens), looped=True), 0, 400, True)
              if e.type == "final"]
    assert finals == [" We found a copy."]


def test_whisper_does_not_commit_again_what_a_fresh_buffer_says_first(whisper):
    """A buffer started at a segment end the decoder stamped too early hears the end of the text
    committed before it: a hypothesis that begins with those words commits only what follows.
    (A trim 4 s early once had 12 words committed twice.)"""
    t = whisper.family.tokens
    encode = whisper.family.tokenizer.encode
    first = [t.timestamp_begin] + encode(" Most of them are fixed, but one problem remains.")
    again = [t.timestamp_begin] + encode(" But one problem remains. Next, the budget.")
    stream = whisper.family.open_stream(StreamOptions(beam_size=1))

    def said(tokens, start):
        events = stream._commit(decoded(tokens, [-0.1] * len(tokens)), start, 300, True)
        stream._end(start + 300)
        return [e.text for e in events if e.type == "final"]

    assert said(first, 0) == [" Most of them are fixed, but one problem remains."]
    assert said(again, 300) == [" Next, the budget."]
    # words that echo a phrase said before, not the end of what was said, are new
    echo = [t.timestamp_begin] + encode(" Most of them are here.")
    assert said(echo, 600) == [" Most of them are here."]


def test_whisper_prompts_with_the_committed_text_as_the_decoder_said_it(whisper, english):
    """Text that leaves the buffer prompts the updates after it with its timestamps, as offline
    transcription prompts a window with the windows before it. (Prompted with the text alone, the
    decoder stopped closing segments, and the buffer ran on to max_segment_s untrimmed.)"""
    t = whisper.family.tokens
    ts0 = t.timestamp_begin
    hello = [ts0] + whisper.family.tokenizer.encode(" Hello world.") + [ts0 + 50]   # <|0.00|> Hello world.<|1.00|>
    morning = [ts0] + whisper.family.tokenizer.encode(" Good morning")
    stream = whisper.family.open_stream(StreamOptions(beam_size=1, context="Greetings."))
    given = list(stream.prompt)
    assert stream._commit(decoded(hello, [np.log(0.5)] * len(hello)), 0, 150, True)
    stream._end(150)
    assert stream.prompt == given + hello             # closed where the decoder closed it
    assert stream._commit(decoded(morning, [np.log(0.5)] * len(morning)), 150, 120, True)
    stream._end(270)
    assert stream.prompt == given + hello + morning + [ts0 + 60]   # not closed: where the buffer was cut
    assert stream.context == given + hello[1:-1] + morning[1:]    # what was said, without timestamps
    stream._frames_arrived(stream.buffer.accept(english[:4 * SR]))
    update = stream._decode_buffer(390, False)
    work = next(update)
    assert work.key[1] == "encode"
    work = update.send(work.run([work.item])[0])
    assert work.key[1] == "decode" and work.item[1] == stream.prompt
    # a segment trimmed from a long buffer goes in through the timestamp that closed it
    long = whisper.family.open_stream(StreamOptions(beam_size=1))
    long.buffer.accept(np.zeros(12 * SR, np.float32))
    both = hello + [ts0 + 50] + morning[1:]             # ... world.<|1.00|><|1.00|> Good morning
    for _ in range(2):
        long._commit(decoded(both, [np.log(0.5)] * len(both)), 0, 1100, False)
    assert long.prompt == hello and long._start == 100


def _recording(update, seen: list):
    """The update, with the kind of each piece of work it asks for appended to `seen`."""
    result = None
    try:
        while True:
            work = update.send(result)
            seen.append(work.key[1])
            result = yield work
    except StopIteration as stop:
        return stop.value


def test_whisper_utterance_end_makes_the_last_hypothesis_final_when_it_heard_it_all(whisper, english):
    """When an utterance ends inside the audio the last hypothesis heard, its rest is final as it
    stands, with no decoder call (decoding again once said the last sentence twice). When the
    utterance goes on past that audio, the utterance is decoded again; when it goes on more than a
    second past the end of that hypothesis's text, the audio after the text is decoded on its own."""
    t = whisper.family.tokens
    tokens = [t.timestamp_begin] + whisper.family.tokenizer.encode(" Then it rests in settling tanks.")
    stream = whisper.family.open_stream(StreamOptions(beam_size=1))
    stream.buffer.accept(english[:4 * SR])
    assert [e.type for e in stream._commit(decoded(tokens, [np.log(0.5)] * len(tokens)), 0, 300, False)] == ["partial"]
    end = stream._decode(280, True)
    with pytest.raises(StopIteration) as stop:
        next(end)   # no work asked for
    assert [(e.type, e.text) for e in stop.value.value] == [("final", " Then it rests in settling tanks.")]
    assert stream.previous == [] and stream.committed == tokens[1:]
    later = whisper.family.open_stream(StreamOptions(beam_size=1))
    later.buffer.accept(english[:4 * SR])
    later._commit(decoded(tokens, [np.log(0.5)] * len(tokens)), 0, 300, False)
    assert next(later._decode(340, True)).key[1] == "encode"
    # it heard it all, but its text closed at 1.00 s of the utterance's 2.80 s: that text is final,
    # and the audio after it is decoded on its own. Closed at 2.40 s, nothing is left unsaid.
    for close, tail in ((50, True), (120, False)):
        short = whisper.family.open_stream(StreamOptions(beam_size=1))
        short._frames_arrived(short.buffer.accept(english[:4 * SR]))
        closed = tokens + [t.timestamp_begin + close]
        short._commit(decoded(closed, [np.log(0.5)] * len(closed)), 0, 300, False)
        seen = []
        events = drive(_recording(short._decode(280, True), seen))
        finals = [e for e in events if e.type == "final"]
        assert finals[0].text == " Then it rests in settling tanks."
        assert (seen == ["encode", "decode"]) == tail and (len(finals) == 2) == tail
        if tail:   # words the clip says in its 1.0-2.8 s, not the sentence forced before
            said = set("tomorrow the weather will be sunny in the morning and rain in the afternoon".split())
            assert 1.0 <= finals[1].start and finals[1].end <= 2.8 + 1e-6
            assert len(set(normalise(finals[1].text).split()) & said) >= 4, finals[1].text


def test_whisper_commits_sure_words_that_ended_before_the_buffer_end_at_once(whisper):
    """A word whose tokens all had at least commit_prob, followed by another word and ended
    CONFIDENT_BEFORE_END_S before the buffer's end, is final on the first hypothesis; with
    commit_prob 1 it waits for a second one."""
    t = whisper.family.tokens
    ids = [whisper.family.tokenizer.encode(w) for w in (" Hello", " there", " world")]
    tokens = [t.timestamp_begin] + ids[0] + [t.timestamp_begin + 25, t.timestamp_begin + 25] + ids[1] + \
        [t.timestamp_begin + 50, t.timestamp_begin + 50] + ids[2]          # Hello 0-0.5 s, there 0.5-1 s, world
    sure = [np.log(0.99)] * len(tokens)
    hypothesis = decoded(tokens, sure)
    finals = lambda events: [e.text for e in events if e.type == "final"]   # noqa: E731
    # 1.2 s of buffer: " Hello" ended 0.7 s before its end, " there" only 0.2 s
    assert finals(whisper.family.open_stream(StreamOptions(beam_size=1, commit_prob=0.95))._commit(
        hypothesis, 0, 120, False)) == [" Hello"]
    # commit_prob 1 waits for agreement even for tokens the decoder was certain of (log-prob 0)
    certain = decoded(tokens, [0.0] * len(tokens))
    waits = whisper.family.open_stream(StreamOptions(beam_size=1, commit_prob=1.0))
    assert finals(waits._commit(certain, 0, 120, False)) == []
    assert finals(waits._commit(certain, 0, 120, False)) == [" Hello there"]    # agreed: both go on


def test_word_spelling_leaves_out_case_spaces_and_punctuation(whisper):
    tokenizer = whisper.family.tokenizer
    starts = WordStarts(tokenizer)
    assert starts.spelling(tokenizer.encode(", Our")) == starts.spelling(tokenizer.encode(" our")) == "our"
    assert starts.spelling(tokenizer.encode(" Hills.")) == "hills"
    assert starts.spelling(tokenizer.encode(" 20")) == "20"
    assert starts.spelling(tokenizer.encode(",")) == ""


def test_endpoint_defaults_per_family(whisper, qwen):
    frame_ms = 1000 * whisper.family.vad.frame / SR
    assert whisper.stream().endpointer.endpoint_frames == round(1500 / frame_ms)
    assert whisper.stream(endpoint_ms=800).endpointer.endpoint_frames == round(800 / frame_ms)
    assert qwen.stream().endpointer.endpoint_frames == round(800 / frame_ms)


def test_scheduler_batches_streams_and_keeps_each_result(whisper, english):
    other = load_audio(FIXTURES / "en_flite.wav")
    alone = [run(whisper.stream(chunk_ms=640), a, 10240) for a in (english, other)]
    sessions = [whisper.stream(chunk_ms=640) for _ in range(2)]
    scheduler = StreamScheduler()
    got = [[], []]
    for i in range(0, max(len(english), len(other)), 10240):
        chunks = [(s, a[i:i + 10240]) for s, a in zip(sessions, (english, other)) if i < len(a)]
        chunks.append((sessions[0], np.ones(3, dtype=np.int64)))   # a bad chunk fails that step only
        out = scheduler.step(chunks)
        assert isinstance(out[-1], TypeError)
        for (s, _), events in zip(chunks[:-1], out[:-1]):
            got[sessions.index(s)] += events
    for k, events in enumerate(scheduler.step([(s, FINISH) for s in sessions])):
        got[k] += events
    for mine, solo in zip(got, alone):
        assert jiwer.wer(normalise(text(solo)), normalise(text(mine))) <= 0.1
    assert scheduler.items["encode"] > scheduler.calls["encode"]   # windows of both streams shared calls


@pytest.fixture(scope="module")
def one_thread(whisper_base_package, english):
    """A whisper-base model with one intra-op thread, two recordings, and each one's events
    when streamed alone."""
    model = qasr_edge.load_model(whisper_base_package, threads=1)
    audios = (english, load_audio(FIXTURES / "en_flite.wav"))
    return model, audios, [run(model.stream(chunk_ms=640), a, 10240) for a in audios]


def test_live_scheduler_decodes_on_workers_as_audio_arrives(one_thread):
    """Chunks handed over one round at a time (joined after each) give every stream exactly its
    events alone; audio handed over faster than it is decoded is caught up in fewer updates; a
    bad chunk raises in the caller and the stream goes on."""
    from qasr_edge.streaming import LiveScheduler

    model, audios, alone = one_thread
    sessions = [model.stream(chunk_ms=640) for _ in range(2)]
    got = {id(s): [] for s in sessions}
    threads = set()

    def on_events(session, events):
        assert not isinstance(events, Exception), events
        threads.add(threading.current_thread().name)
        got[id(session)] += events

    with LiveScheduler(on_events, workers=2) as live:
        for i in range(0, max(map(len, audios)), 10240):
            for s, a in zip(sessions, audios):
                if i < len(a):
                    live.feed(s, a[i:i + 10240])
            with pytest.raises(TypeError):
                live.feed(sessions[0], np.ones(3, dtype=np.int64))
            live.join()
        for s in sessions:
            live.finish(s)
        live.join()
        assert [got[id(s)] for s in sessions] == alone
        assert len(threads) == 2 and threading.current_thread().name not in threads

        late = model.stream(chunk_ms=640)   # every chunk at once, faster than a worker decodes them
        got[id(late)] = []
        updates = live.counts()[0]
        pieces = range(0, len(audios[0]), 10240)
        for i in pieces:
            live.feed(late, audios[0][i:i + 10240])
        live.finish(late)
        live.join()
        assert text(got[id(late)]) and live.counts()[0] - updates < len(pieces)
        with pytest.raises(RuntimeError):
            live.feed(late, audios[0][:100])   # finished
    with pytest.raises(ValueError):
        LiveScheduler(on_events, workers=0)


def test_live_scheduler_raises_a_failing_handler_in_join(one_thread):
    from qasr_edge.streaming import LiveScheduler

    model, audios, _ = one_thread

    def on_events(session, events):
        raise KeyError("the caller's bug")

    with LiveScheduler(on_events) as live:
        live.feed(model.stream(chunk_ms=640), audios[0][:10240])
        with pytest.raises(KeyError):
            live.join()
        live.join()   # raised once; the worker went on


def test_live_update_that_fails_still_runs_the_finish_handed_over_with_it(one_thread):
    """Audio and its finish taken in one go: a failed update is reported, and the finish after it
    still commits the stream's text (nothing handed over is lost)."""
    from qasr_edge.streaming import LiveScheduler

    model, audios, _ = one_thread
    session = Failing(model, fail_at=1).stream(chunk_ms=640)
    reports = list(LiveScheduler._update(StreamScheduler(), session, [audios[0]], True))
    assert len(reports) == 2 and isinstance(reports[0], RuntimeError)
    assert session.finished
    assert jiwer.wer(normalise(reference("en_weather.wav")), normalise(text(reports[1]))) <= 0.25


class Failing:
    """A model whose streams fail their `fail_at`-th update (the session goes on after it)."""

    def __init__(self, model, fail_at: int):
        self.model, self.fail_at = model, fail_at

    def stream(self, **options):
        session = self.model.stream(**options)
        update, calls = session._update, []

        def failing(final):
            calls.append(final)
            if len(calls) == self.fail_at:
                raise RuntimeError("a bad update")
            return update(final)

        session._update = failing
        return session


class Opened:
    """A model that keeps the sessions it opened."""

    def __init__(self, model):
        self.model, self.sessions = model, []

    def stream(self, **options):
        self.sessions.append(self.model.stream(**options))
        return self.sessions[-1]


# --- streams over TCP (qasr-edge serve) --------------------------------------------------------

def _rows(sock) -> list[dict]:
    with sock.makefile("rb") as lines:
        return [json.loads(line) for line in lines]


def _as_events(rows) -> list[StreamEvent]:
    return [StreamEvent.from_dict(r) for r in rows if r["type"] != "error"]


def _pcm(audio: np.ndarray) -> bytes:
    from qasr_edge.streaming.sources import pcm_bytes

    return pcm_bytes(audio)


def test_server_decodes_a_stream_per_connection(one_thread):
    """Two clients at once, one sending bare PCM in odd-sized byte pieces, the other a header of
    options first; a third connection over `max_streams` gets an error line; each stream's
    events are well formed and say what its clip says. (Not exactly what the stream says alone:
    audio that arrives faster than it is decoded is decoded in fewer updates.)"""
    import socket
    import time

    from qasr_edge.streaming.server import HEADER, StreamServer

    model, audios, _ = one_thread
    with StreamServer(model, port=0, workers=2, max_streams=2) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        bare, headed = (socket.create_connection(server.address) for _ in range(2))
        pcm = _pcm(audios[0])
        bare.sendall(pcm[:1001])
        headed.sendall(HEADER + json.dumps({"language": "en", "partials": False}).encode() + b"\n")
        for _ in range(200):
            if server.streams == 2:
                break
            time.sleep(0.05)
        assert server.streams == 2
        third = socket.create_connection(server.address)
        third.sendall(pcm[:6400])
        refused = _rows(third)
        assert [r["type"] for r in refused] == ["error"] and "busy" in refused[0]["message"]

        def send_bare():
            for i in range(1001, len(pcm), 1001):
                bare.sendall(pcm[i:i + 1001])
            bare.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send_bare)
        sender.start()
        headed.sendall(_pcm(audios[1]))
        headed.shutdown(socket.SHUT_WR)
        got = [_as_events(_rows(c)) for c in (bare, headed)]
        sender.join()
    for events, audio, clip in zip(got, audios, ("en_weather.wav", "en_flite.wav")):
        assert_well_formed(events, len(audio) / SR)
        assert jiwer.wer(normalise(reference(clip)), normalise(text(events))) <= 0.25
    assert all(e.type == "final" and e.language == "en" for e in got[1])
    assert server.streams == 0


def test_server_stream_survives_a_failed_update(one_thread):
    """An update that fails sends an error line; the stream goes on and commits its text."""
    import time

    from qasr_edge.streaming.server import StreamServer, stream_to_server

    model, audios, _ = one_thread

    def paced():
        for i in range(0, len(audios[0]), 10240):
            yield audios[0][i:i + 10240]
            time.sleep(0.1)

    with StreamServer(Failing(model, fail_at=2), port=0, workers=1) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        rows = list(stream_to_server(*server.address, paced(), {"chunk_ms": 640}))
    errors = [r for r in rows if r["type"] == "error"]
    assert len(errors) == 1 and "a bad update" in errors[0]["message"]
    assert rows.index(errors[0]) < len(rows) - 1 and rows[-1]["type"] == "final"
    assert jiwer.wer(normalise(reference("en_weather.wav")), normalise(text(_as_events(rows)))) <= 0.25


def test_server_ends_an_idle_stream_and_drops_a_vanished_client(one_thread):
    """A client that stops sending (without closing) gets its stream finished after
    `idle_timeout`: its finals, then the end of the connection. A client that resets its
    connection has its stream dropped, and the server serves the next one."""
    import socket
    import struct
    import time

    from qasr_edge.streaming.server import StreamServer

    model, audios, _ = one_thread
    opened = Opened(model)
    with StreamServer(opened, port=0, workers=1, idle_timeout=1.0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        idle = socket.create_connection(server.address)
        idle.settimeout(60)
        idle.sendall(_pcm(audios[0]))   # and then nothing, the connection left open
        began = time.perf_counter()
        events = _as_events(_rows(idle))
        assert time.perf_counter() - began < 60 and server.streams == 0
        assert jiwer.wer(normalise(reference("en_weather.wav")), normalise(text(events))) <= 0.25

        gone = socket.create_connection(server.address)
        gone.sendall(_pcm(audios[1]))
        for _ in range(100):
            if server.streams:
                break
            time.sleep(0.05)
        gone_session = opened.sessions[-1]
        gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        gone.close()   # a reset, not an end of audio
        for _ in range(400):
            if not server.streams:
                break
            time.sleep(0.05)
        assert server.streams == 0
        server.live.join()
        assert not gone_session.finished   # dropped, not decoded to its end
        again = socket.create_connection(server.address)
        again.sendall(_pcm(audios[0]))
        again.shutdown(socket.SHUT_WR)
        assert text(_as_events(_rows(again)))


def test_closing_the_server_commits_what_open_streams_hold(one_thread):
    import socket
    import time

    from qasr_edge.streaming.server import StreamServer

    model, audios, _ = one_thread
    opened = Opened(model)
    server = StreamServer(opened, port=0, workers=1)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = socket.create_connection(server.address)
    client.settimeout(60)
    client.sendall(_pcm(audios[0]))   # the audio, but not its end
    for _ in range(400):   # until the server has taken all of it
        server.live.join()
        if len(opened.sessions) == 2 and opened.sessions[1].samples_fed == len(audios[0]):
            break
        time.sleep(0.05)
    server.close()
    events = _as_events(_rows(client))
    assert events and events[-1].type == "final"
    assert jiwer.wer(normalise(reference("en_weather.wav")), normalise(text(events))) <= 0.25
    with pytest.raises(OSError):
        socket.create_connection(server.address, timeout=5)


def test_live_scheduler_cancel_drops_what_a_stream_has_waiting(one_thread):
    from qasr_edge.streaming import LiveScheduler

    model, audios, _ = one_thread
    reported = []
    with LiveScheduler(lambda s, events: reported.append(events), workers=1) as live:
        session = model.stream(chunk_ms=640)
        with live._cond:   # held: no worker can take the audio before the cancel
            live.feed(session, audios[0])
            live.cancel(session)
        live.join()
        assert reported == [] and live.counts()[0] == 0
        with pytest.raises(RuntimeError):
            live.feed(session, audios[0])


def test_cli_serve_and_stream_connect(whisper_base_package):
    """`qasr-edge serve` on a free port, `qasr-edge stream --connect` sending it a file; Ctrl-C
    stops the server cleanly."""
    import signal

    server = subprocess.Popen([sys.executable, "-m", "qasr_edge.cli", "serve", "--model", str(whisper_base_package),
                               "--port", "0", "--threads", "2"], stderr=subprocess.PIPE, text=True,
                              cwd=tempfile.gettempdir())
    try:
        banner = server.stderr.readline()
        address = re.search(r" on (\S+:\d+) ", banner)
        assert address, banner
        out = subprocess.run([sys.executable, "-m", "qasr_edge.cli", "stream", str(FIXTURES / "en_weather.wav"),
                              "--connect", address.group(1), "--no-partials"],
                             capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
        rows = [json.loads(line) for line in out.stdout.splitlines()]
        assert rows and all(r["type"] == "final" for r in rows)
        said = normalise("".join(r["text"] for r in rows))
        assert jiwer.wer(normalise(reference("en_weather.wav")), said) <= 0.25
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=60) == 0
    finally:
        server.kill()


# --- Qwen3-ASR (tiny random checkpoint) ------------------------------------------------------

@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    from qasr_edge.tooling.export import export

    root = tmp_path_factory.mktemp("qwen3-stream")
    return qasr_edge.load_model(export(tiny.build_checkpoint(root / "ckpt"), root / "pkg"), threads=2)


@pytest.fixture(scope="module")
def speech_with_pause(english):
    return np.concatenate([english, np.zeros(2 * SR, np.float32), english[:10 * SR]])


@pytest.fixture(scope="module")
def qwen_640(qwen, speech_with_pause):
    return run(qwen.stream(chunk_ms=640, language="en"), speech_with_pause, 10240)


def test_qwen_reuse_gives_the_same_tokens_as_recomputing(qwen, qwen_640, speech_with_pause):
    again = run(qwen.stream(chunk_ms=640, language="en", reuse=False), speech_with_pause, 10240)
    assert finals(qwen_640) and finals(again) == finals(qwen_640)
    assert [e.tokens for e in again] == [e.tokens for e in qwen_640]   # partials too


def test_qwen_streams_on_live_workers_give_their_events_alone(qwen, speech_with_pause, english):
    """The incremental Qwen3-ASR sessions keep all their state (caches, finished windows) to
    themselves: two on two workers of a one-thread model give exactly their events alone."""
    from qasr_edge.streaming import LiveScheduler

    model = qasr_edge.load_model(qwen.package.root, threads=1)
    audios = (speech_with_pause, english[::-1].copy())
    alone = [run(model.stream(chunk_ms=640, language="en"), a, 10240) for a in audios]
    sessions = [model.stream(chunk_ms=640, language="en") for _ in audios]
    got = {id(s): [] for s in sessions}
    with LiveScheduler(lambda s, events: got[id(s)].extend(events), workers=2) as live:
        for i in range(0, max(map(len, audios)), 10240):
            for s, a in zip(sessions, audios):
                if i < len(a):
                    live.feed(s, a[i:i + 10240])
            live.join()
        for s in sessions:
            live.finish(s)
        live.join()
    assert [got[id(s)] for s in sessions] == alone and all(finals(a) for a in alone)


def test_server_serves_qwen3_asr_streams(qwen, speech_with_pause):
    """The server is family-agnostic: a Qwen3-ASR stream over TCP gives well-formed events, and
    paced at one chunk per update, exactly its finals alone."""
    import time

    from qasr_edge.streaming.server import StreamServer, stream_to_server

    alone = run(qwen.stream(chunk_ms=640, language="en"), speech_with_pause, 10240)
    opened = Opened(qwen)
    with StreamServer(opened, port=0, workers=1, defaults={"language": "en", "chunk_ms": 640}) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()

        def one_update_at_a_time():
            for i in range(0, len(speech_with_pause), 10240):
                yield speech_with_pause[i:i + 10240]
                for _ in range(400):   # until the server decoded this chunk
                    server.live.join()
                    if len(opened.sessions) == 2 and opened.sessions[1].samples_fed == min(i + 10240, len(speech_with_pause)):
                        break
                    time.sleep(0.01)

        rows = list(stream_to_server(*server.address, one_update_at_a_time()))
    events = _as_events(rows)
    assert_well_formed(events, len(speech_with_pause) / SR)
    assert finals(events) == finals(alone) and finals(alone)


def test_qwen_reuse_skips_finished_windows_and_cached_prompt(qwen, speech_with_pause):
    counts = {}
    for reuse in (True, False):
        s = qwen.stream(chunk_ms=640, language="en", reuse=reuse)
        encoded, prefilled = [], []
        graphs = qwen.family.graphs
        encode = graphs.encode
        graphs.encode = lambda windows, *a, **k: (encoded.append(len(windows)), encode(windows, *a, **k))[1]
        generate = s._generate
        s._generate = lambda *a: (generate(*a), prefilled.append(s.reused_positions))[0]
        try:
            run(s, speech_with_pause, 10240)
        finally:
            graphs.encode = encode
        counts[reuse] = sum(encoded), prefilled
    assert counts[True][0] < counts[False][0]            # finished windows are not encoded again
    assert max(counts[True][1]) > 0 and max(counts[False][1]) == 0   # the cache's prefix was reused


@pytest.mark.parametrize("piece", [160, "all"])
def test_qwen_finals_do_not_depend_on_feed_granularity(qwen, qwen_640, speech_with_pause, piece):
    got = run(qwen.stream(chunk_ms=640, language="en"), speech_with_pause,
              len(speech_with_pause) if piece == "all" else piece)
    assert finals(got) == finals(qwen_640)


def test_qwen_stream_events_and_silence(qwen, qwen_640, speech_with_pause):
    assert_well_formed(qwen_640, len(speech_with_pause) / SR)
    assert len(finals(qwen_640)) >= 2   # the pause ends the first utterance
    assert run(qwen.stream(language="en"), np.zeros(5 * SR, np.float32), 10240) == []


def test_qwen_segments_are_bounded(qwen, english):
    long = np.concatenate([english, english, english])
    s = qwen.stream(chunk_ms=640, language="en", max_segment_s=6, endpoint_ms=5000)
    events = run(s, long, 10240)
    fin = [e for e in events if e.type == "final"]
    assert len(fin) >= len(long) / SR / 6 - 1
    assert_well_formed(events, len(long) / SR)


# --- commands ------------------------------------------------------------------------------

def test_cli_stream_prints_jsonl_events(whisper_base_package, whisper_640, english):
    wav = FIXTURES / "en_weather.wav"
    out = subprocess.run([sys.executable, "-m", "qasr_edge.cli", "stream", str(wav), "--model",
                          str(whisper_base_package), "--chunk-ms", "640", "--threads", "2"],
                         capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert [tuple(e["tokens"]) for e in events if e["type"] == "final"] == finals(whisper_640)
    assert all(set(e) >= {"type", "text", "start", "end", "emitted_at"} for e in events)
    pcm = np.clip(english * 32768, -32768, 32767).astype("<i2").tobytes()
    piped = subprocess.run([sys.executable, "-m", "qasr_edge.cli", "stream", "-", "--model",
                            str(whisper_base_package), "--no-partials"], input=pcm, capture_output=True, check=True,
                           cwd=tempfile.gettempdir())
    lines = [json.loads(line) for line in piped.stdout.decode().splitlines()]
    assert lines and all(e["type"] == "final" for e in lines)
    assert jiwer.wer(normalise(text(whisper_640)), normalise("".join(e["text"] for e in lines))) <= 0.1


def file_microphone(audio: np.ndarray) -> types.SimpleNamespace:
    """A stand-in for sounddevice whose input device plays `audio`, then stops."""

    class FileInput:
        def __init__(self, samplerate, channels, dtype, blocksize, device, callback):
            assert samplerate == SR and channels == 1
            self.callback, self.blocksize, self.active = callback, blocksize, True

        def __enter__(self):
            for i in range(0, len(audio), self.blocksize):
                block = audio[i:i + self.blocksize]
                self.callback(block[:, None], len(block), None, None)
            self.active = False
            return self

        def __exit__(self, *exc):
            return False

    return types.SimpleNamespace(InputStream=FileInput, query_devices=lambda device=None, kind=None: {"name": "file"})


def test_dictate_reads_a_file_backed_input(whisper_base_package, english, monkeypatch, capsys):
    """`dictate` through a stand-in for sounddevice that plays a file as the microphone."""
    from qasr_edge import cli

    monkeypatch.setitem(sys.modules, "sounddevice", file_microphone(english))
    assert cli.main(["dictate", "--model", str(whisper_base_package)]) == 0
    printed = capsys.readouterr().out
    offline = qasr_edge.load_model(whisper_base_package).transcribe(english)[0].text
    assert jiwer.wer(normalise(offline), normalise(printed)) <= 0.15


def test_dictate_connects_to_a_server(one_thread, english, monkeypatch, capsys):
    """`dictate --connect`: the microphone's audio goes to a `StreamServer`, its text comes back."""
    from qasr_edge import cli
    from qasr_edge.streaming.server import StreamServer

    model, _, _ = one_thread
    monkeypatch.setitem(sys.modules, "sounddevice", file_microphone(english))
    with StreamServer(model, port=0, workers=1) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        host, port = server.address
        assert cli.main(["dictate", "--connect", f"{host}:{port}", "--language", "en"]) == 0
        assert server.live.counts()[0] > 0   # the server decoded it
    printed = capsys.readouterr().out
    assert jiwer.wer(normalise(reference("en_weather.wav")), normalise(printed)) <= 0.25


def test_dictate_without_an_input_device_says_so(whisper_base_package):
    out = subprocess.run([sys.executable, "-m", "qasr_edge.cli", "dictate", "--model", str(whisper_base_package)],
                         capture_output=True, text=True, cwd=tempfile.gettempdir())
    assert out.returncode == 2
    assert "audio input" in out.stderr or "sounddevice" in out.stderr, out.stderr


def test_coalesced_updates_catch_up_at_chunk_boundaries(whisper, whisper_640, english):
    """A stream fed 2.5 chunks at a time with coalescing decodes once per feed, at a chunk
    boundary, and still commits the same text."""
    s = whisper.stream(chunk_ms=640)
    decoded = []
    update = s._update

    def counting(final):
        decoded.append(s.samples_fed)
        return update(final)

    s._update = counting
    events = []
    for i in range(0, len(english), 25600):
        for u in s.updates(english[i:i + 25600], coalesce=True):
            events += drive(u)
    events += s.finish()
    assert all(n % 10240 == 0 for n in decoded[:-1])
    assert len(decoded) - 1 <= -(-len(english) // 25600)
    assert jiwer.wer(normalise(text(whisper_640)), normalise(text(events))) <= 0.25   # greedy, fewer updates


def test_whisper_cuts_an_endless_utterance(whisper):
    """Speech-like audio without a pause (reversed speech: the decoder rarely agrees on words)
    is committed and cut at max_segment_s instead of outgrowing the buffer."""
    audio = load_audio(FIXTURES / "long_en.wav")[:40 * SR][::-1].copy()
    s = whisper.stream(chunk_ms=640, endpoint_ms=60000, max_segment_s=10)
    events = run(s, audio, 10240)
    assert_well_formed(events, len(audio) / SR)
    assert s.buffer.samples_seen == len(audio)
