"""Reproducible benchmark inputs built from the committed fixtures (nothing is downloaded)."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OUT = Path(__file__).resolve().parent / "data"


def _read(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def write_wav(path: Path, pcm: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.astype(np.int16).tobytes())
    return path


def long_meeting(seconds: float = 270.0) -> Path:
    """A 'meeting' of the given length: the long fixture and the English clips in turn, with pauses."""
    path = OUT / f"meeting_{int(seconds)}s.wav"
    if path.exists():
        return path
    clips = json.loads((FIXTURES / "fixtures.json").read_text())
    parts = [_read(FIXTURES / clips["long"]["file"])] + [
        _read(FIXTURES / c["file"]) for c in clips["clips"] if c["lang"] == "en"]
    pause = np.zeros(int(0.8 * 16000), dtype=np.int16)
    pcm, i = [], 0
    while sum(len(p) for p in pcm) < seconds * 16000:
        pcm += [parts[i % len(parts)], pause]
        i += 1
    return write_wav(path, np.concatenate(pcm)[: int(seconds * 16000)])


def short_clips() -> list[Path]:
    clips = json.loads((FIXTURES / "fixtures.json").read_text())
    return [FIXTURES / c["file"] for c in clips["clips"]]


def short_clips_36(count: int = 36, seed: int = 36) -> list[Path]:
    """`count` clips of 1-7 s cut from the committed fixtures (all languages and the long English one).

    Deterministic: clip i has a length drawn uniformly from 1-7 s and a start drawn uniformly within
    a fixture long enough for it, chosen in turn, from one seeded generator. Written once under
    bench/data/short36/ (not committed: rebuilt from the fixtures)."""
    folder = OUT / f"short{count}"
    paths = [folder / f"clip{i:02d}.wav" for i in range(count)]
    if all(p.exists() for p in paths):
        return paths
    clips = json.loads((FIXTURES / "fixtures.json").read_text())
    sources = [_read(FIXTURES / c["file"]) for c in clips["clips"]] + [_read(FIXTURES / clips["long"]["file"])]
    rng = np.random.default_rng(seed)
    for i, path in enumerate(paths):
        length = int(rng.uniform(1.0, 7.0) * 16000)
        fitting = [s for s in sources if len(s) >= length]
        source = fitting[i % len(fitting)]
        start = int(rng.integers(0, len(source) - length + 1))
        write_wav(path, source[start:start + length])
    return paths


# A second long-form English recording, none of it in the fixtures and no sentence repeated (the
# meeting repeats its parts, so one misheard word there counts several times): (tool, voice, text),
# read in turn with LECTURE_PAUSE_S of silence between sentences.
LECTURE = [
    ("flite", "slt", "Welcome back to the second part of our course on water and cities."),
    ("espeak-ng", "en-us", "Last time we looked at how ancient towns were built along rivers."),
    ("flite", "rms", "Today we follow the water from the reservoir to the kitchen tap."),
    ("flite", "awb", "Most cities collect rain in large lakes behind concrete dams."),
    ("espeak-ng", "en", "The water flows through screens that catch leaves, fish and plastic."),
    ("flite", "kal", "Then it rests in settling tanks so that sand and mud sink to the bottom."),
    ("flite", "slt", "Chemicals are added to make the smallest particles stick together."),
    ("espeak-ng", "en-us", "After that, the water passes through thick layers of gravel and charcoal."),
    ("flite", "rms", "Engineers test samples every hour for bacteria, metals and taste."),
    ("flite", "awb", "A small amount of chlorine keeps the pipes clean on the long way to your house."),
    ("espeak-ng", "en", "Pumps push the water uphill into towers that store it for the morning rush."),
    ("flite", "kal", "When everyone showers at seven, the pressure in the network drops a little."),
    ("flite", "slt", "Old iron pipes can lose almost a third of the water through tiny cracks."),
    ("espeak-ng", "en-us", "Some cities now listen to their pipes with microphones to find those leaks."),
    ("flite", "rms", "A leak sounds like a steady hiss that grows louder as you walk closer."),
    ("flite", "awb", "Repair crews dig a narrow hole at night when the streets are quiet."),
    ("espeak-ng", "en", "Used water leaves the house through a separate system of sewers."),
    ("flite", "kal", "In older districts, rain and sewage share the same tunnels."),
    ("flite", "slt", "During heavy storms those tunnels overflow into the river."),
    ("espeak-ng", "en-us", "Newer neighbourhoods keep rain apart and let it soak into green roofs and parks."),
    ("flite", "rms", "At the treatment plant, bacteria eat most of the dirt in large open basins."),
    ("flite", "awb", "The sludge that remains can be dried and burned to produce electricity."),
    ("espeak-ng", "en", "Clean water returns to the river a few kilometres downstream."),
    ("flite", "kal", "Farmers and factories downstream depend on its quality."),
    ("flite", "slt", "Next week we will visit a treatment plant together, so wear sturdy shoes."),
    ("espeak-ng", "en-us", "Bring a notebook, a pencil and a bottle of water for the bus ride."),
    ("flite", "rms", "We meet in front of the library at half past eight on Tuesday."),
    ("flite", "awb", "The bus leaves at a quarter to nine, and it will not wait for anyone."),
    ("espeak-ng", "en", "If you are ill that day, send an email to the department office."),
    ("flite", "kal", "Your essay on the history of a local bridge is due at the end of the month."),
    ("flite", "slt", "Please use at least three sources, and one of them should be a map."),
    ("espeak-ng", "en-us", "I will answer questions about the essay during my office hours on Thursday."),
]
LECTURE_PAUSE_S = 0.7


def synthesize(tool: str, voice: str, text: str) -> np.ndarray:
    """One sentence read by flite or espeak-ng, as 16 kHz mono int16 (sox converts)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        raw, out = Path(work) / "raw.wav", Path(work) / "out.wav"
        if tool == "flite":
            subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(raw)], check=True)
        else:
            subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True)
        subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)], check=True)
        return _read(out)


def lecture() -> tuple[Path, str]:
    """The LECTURE sentences synthesized (flite, espeak-ng and sox, as the fixtures are) into one
    file, and its reference text. Written once under bench/data/lecture/ (not committed)."""
    path = OUT / "lecture" / "lecture.wav"
    read_aloud(path, [(tool, voice, text, LECTURE_PAUSE_S) for tool, voice, text in LECTURE])
    return path, _reference(path, [text for _, _, text in LECTURE], "reference.txt")


def read_aloud(path: Path, lines: list[tuple[str, str, str, float]]) -> None:
    """(tool, voice, text, seconds of silence after it) read in turn into one 16 kHz file, unless
    `path` exists already."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = []
    for tool, voice, text, pause in lines:
        parts += [synthesize(tool, voice, text), np.zeros(int(pause * 16000), dtype=np.int16)]
    write_wav(path, np.concatenate(parts))


def _reference(path: Path, sentences: list[str], name: str) -> str:
    """The sentences joined, written beside the recording as `name`; returns the text."""
    reference = " ".join(sentences)
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / name).write_text(reference + "\n", encoding="utf-8")
    return reference


# A third long-form English recording, for checking what the lecture tuned (a different topic,
# other sentences, pauses that vary): (tool, voice, text, pause after it in seconds).
TALK = [
    ("espeak-ng", "en-us", "Good evening, and thank you for coming to this talk about the night sky.", 0.5),
    ("flite", "slt", "Before we start, please switch your phones to silent mode.", 1.1),
    ("flite", "rms", "Tonight we will find four planets without a telescope.", 0.6),
    ("espeak-ng", "en", "Venus is the brightest of them and shines low in the west after sunset.", 0.8),
    ("flite", "awb", "Jupiter rises in the east around nine and looks like a steady yellow lamp.", 0.4),
    ("flite", "kal", "Stars twinkle because their light is bent by moving air, but planets mostly do not.", 1.3),
    ("espeak-ng", "en-us", "Mars is smaller and has a clear orange colour that is easy to recognise.", 0.7),
    ("flite", "slt", "Saturn is fainter, so you need a dark place far away from street lights.", 0.5),
    ("flite", "rms", "Binoculars are enough to see the four largest moons of Jupiter.", 0.9),
    ("espeak-ng", "en", "Galileo saw them in sixteen ten and drew their positions night after night.", 0.6),
    ("flite", "awb", "He noticed that they moved, and concluded that they were circling the planet.", 1.0),
    ("flite", "kal", "That simple drawing changed how people thought about the centre of the universe.", 0.5),
    ("espeak-ng", "en-us", "Our own moon is best observed when it is half full, not when it is full.", 0.8),
    ("flite", "slt", "Along the line between light and shadow, the craters cast long dark shadows.", 0.4),
    ("flite", "rms", "The largest crater you can see with binoculars is almost a hundred kilometres wide.", 1.2),
    ("espeak-ng", "en", "Comets are balls of ice and dust that grow a tail as they approach the sun.", 0.6),
    ("flite", "awb", "Most of them are too faint to see, but every few years a bright one appears.", 0.7),
    ("flite", "kal", "Meteor showers happen when the earth passes through the dust left by a comet.", 0.5),
    ("espeak-ng", "en-us", "The best shower of the year peaks in the middle of August.", 0.9),
    ("flite", "slt", "Lie on your back, let your eyes adapt for twenty minutes, and be patient.", 0.6),
    ("flite", "rms", "A red torch keeps your night vision, because the eye is less sensitive to red light.", 1.0),
    ("espeak-ng", "en", "Light pollution hides most stars from people who live in large cities.", 0.4),
    ("flite", "awb", "Some villages have turned off their street lights after midnight to help.", 0.8),
    ("flite", "kal", "Next month our club will drive to the hills for a whole night of observing.", 0.5),
    ("espeak-ng", "en-us", "We will bring two large telescopes, hot tea and a few folding chairs.", 1.1),
    ("flite", "slt", "If the weather is cloudy, we will move the trip to the following Saturday.", 0.6),
    ("flite", "rms", "You can sign up at the desk by the door, or send a message to the secretary.", 0.7),
    ("espeak-ng", "en", "Children are welcome, but they must be accompanied by an adult.", 0.5),
    ("flite", "awb", "Now let us turn off the lights and look at the first picture together.", 0.8),
]


def talk() -> tuple[Path, str]:
    """The TALK sentences synthesized like the lecture, into bench/data/talk/ (not committed)."""
    path = OUT / "talk" / "talk.wav"
    read_aloud(path, TALK)
    return path, _reference(path, [text for _, _, text, _ in TALK], "reference.txt")


REVOICED_VOICES = [("flite", "slt"), ("espeak-ng", "en-us"), ("flite", "rms"), ("flite", "awb"), ("espeak-ng", "en"),
                   ("flite", "kal")]


def revoiced() -> list[tuple[Path, str]]:
    """The LECTURE and the TALK sentences read again by other voices (sentence i by voice
    i + 3 of REVOICED_VOICES) with pauses of 0.3-1.4 s: two more recordings of the same kind,
    for checking stream policies on more than one reading. Written once under
    bench/data/revoiced/ (not committed): lecture_v.wav and talk_v.wav, each with a .txt."""
    rng = np.random.default_rng(7)
    out = []
    for name, sentences in (("lecture_v", [t for _, _, t in LECTURE]), ("talk_v", [t for _, _, t, _ in TALK])):
        path = OUT / "revoiced" / f"{name}.wav"
        pauses = rng.uniform(0.3, 1.4, len(sentences))
        voices = [REVOICED_VOICES[(i + 3) % len(REVOICED_VOICES)] for i in range(len(sentences))]
        read_aloud(path, [(tool, voice, text, pause) for (tool, voice), text, pause in zip(voices, sentences, pauses)])
        out.append((path, _reference(path, sentences, f"{name}.txt")))
    return out


WORKLOADS = {"long_meeting": lambda: [long_meeting()], "short_clips_36": short_clips_36,
             "lecture": lambda: [lecture()[0]], "talk": lambda: [talk()[0]],
             "revoiced": lambda: [p for p, _ in revoiced()]}

if __name__ == "__main__":  # python bench/workloads.py short_clips_36  -> one path per line
    import sys

    for p in WORKLOADS[sys.argv[1] if len(sys.argv) > 1 else "long_meeting"]():
        print(p)
