"""The Whisper family adapter: prompts, language detection, and long audio by 30 s windows that
seek by the last timestamp and condition on the previous text. Windows of different inputs are
encoded and decoded together in one batch. With `chunking="vad"`, long audio is instead cut at
silences into chunks of at most 30 s that are decoded in parallel, like faster-whisper's
BatchedInferencePipeline."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from ...batching import PaddingStats, fit_count
from ...features import log_mel_spectrogram
from ...kvcache import bytes_per_token
from ...options import TranscribeOptions
from ...package import ModelPackage
from ...profiles import Profile
from ...results import Segment, Transcript
from ...search import Decoded, Prefilled, SearchOptions, decode_with_fallback, log_softmax
from ...tokenizer import Tokenizer
from ...vad import SpeechDetector, chunk_regions, speech_regions
from .graphs import WhisperGraphs, take_windows
from .rules import SuppressAtStart, SuppressTokens, TimestampRules
from .tokens import FRAMES_PER_SECOND, INPUT_STRIDE, N_FRAMES, TIME_PRECISION, WhisperTokens, non_speech_tokens

SAMPLE_RATE = 16000
HOP = 160                   # samples per mel frame
MIN_SPEECH_SECONDS = 0.25   # less than this, heard by the voice-activity detector, is no speech


class _Pieces:
    """An array cut along its last axis into pieces of `step`, so that the pieces a job has moved
    past can be let go while it goes on (a long input's log-mel and audio are not held whole to
    its end)."""

    def __init__(self, array: np.ndarray, step: int):
        self.step, self.length = step, array.shape[-1]
        self._empty = array[..., :0].copy()
        self._pieces: list[np.ndarray | None] = [array[..., i:i + step].copy() for i in range(0, self.length, step)]

    def span(self, start: int, stop: int) -> np.ndarray:
        """array[..., start:stop], as numpy slices it (a stop past the end ends there); the piece
        holding `start` must not have been let go."""
        stop = min(stop, self.length)
        if stop <= start:
            return self._empty
        parts = [self._pieces[k][..., max(start - k * self.step, 0):stop - k * self.step]
                 for k in range(start // self.step, -(-stop // self.step))]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)

    def release_before(self, position: int) -> None:
        for k in range(min(position // self.step, len(self._pieces))):
            self._pieces[k] = None


@dataclass
class _Job:
    """One input's progress through its windows."""

    samples: int                               # length of the input
    features: _Pieces = field(repr=False)      # normalised log-mel of the whole input [n_mels, frames]
    # the input in float16 for the voice-activity gate (None without one): half the float32 samples,
    # which the job lets go of once it has the log-mel
    gate_audio: _Pieces | None = field(default=None, repr=False)
    language: str | None = None
    language_probability: float = 1.0
    all_language_probs: list[tuple[str, float]] | None = None
    seek: int = 0
    all_tokens: list[int] = field(default_factory=list)
    prompt_reset_since: int = 0
    segments: list[Segment] = field(default_factory=list)

    @property
    def content_frames(self) -> int:
        return self.features.length - 1

    @property
    def done(self) -> bool:
        return self.seek >= self.content_frames

    def forget_before_seek(self) -> None:
        """Let go of the log-mel and audio before the seek: windows only move forward."""
        self.features.release_before(self.seek)
        if self.gate_audio is not None:
            self.gate_audio.release_before(self.seek * HOP)


class WhisperModel:
    family = "whisper"

    def __init__(self, package: ModelPackage, profile: Profile):
        self.package = package
        self.profile = profile
        self.graphs = WhisperGraphs(package, profile)
        self.tokens = WhisperTokens.from_manifest(package.special_tokens)
        self.tokenizer = Tokenizer(package.tokenizer_path, special_limit=self.tokens.eot)
        self._non_speech = non_speech_tokens(self.tokenizer)
        self.vad = SpeechDetector.from_package(package, profile)

    # -- public --------------------------------------------------------------------------------

    def transcribe(self, audios: list[np.ndarray], options: TranscribeOptions,
                   progress: Callable[[float], None] | None = None) -> list[Transcript]:
        if options.language is not None and self.tokens.multilingual and options.language not in self.tokens.languages:
            raise ValueError(f"unknown language '{options.language}' (known: {', '.join(self.tokens.languages)})")
        language = options.language if self.tokens.multilingual else "en"
        if options.chunking == "vad":
            return self._transcribe_speech_chunks(audios, options, progress)
        # the samples are handed over: once a job has its log-mel, its float32 samples are let go
        jobs = []
        for i in range(len(audios)):
            jobs.append(self._start(audios[i], language, options))
            audios[i] = None
        batch = fit_count(self._bytes_per_window(options), self.profile.memory_budget_mb << 20,
                          options.batch_size or self.profile.max_batch)
        self.stats = {"audio": PaddingStats(), "prompt": PaddingStats()}
        total = sum(j.content_frames for j in jobs) or 1
        # longest inputs first: their windows keep the batches full while the short ones finish
        order = sorted(jobs, key=lambda j: j.content_frames, reverse=True)
        while active := [j for j in order if not j.done]:
            for start in range(0, len(active), batch):
                self._decode_windows(active[start:start + batch], options)
            if progress:
                progress(sum(min(j.seek, j.content_frames) for j in jobs) / total)
        return [self._transcript(job) for job in jobs]

    def _transcribe_speech_chunks(self, audios: list[np.ndarray], options: TranscribeOptions,
                                  progress: Callable[[float], None] | None) -> list[Transcript]:
        """Long audio cut at the detector's silences into chunks of at most 30 s, all decoded as
        independent windows in shared batches (no conditioning across chunks)."""
        if self.vad is None:
            raise ValueError("chunking='vad' needs a package with a voice-activity detector (vad.onnx)")
        pieces: list[tuple[int, float, np.ndarray]] = []        # (input, offset s, audio)
        for i, audio in enumerate(audios):
            regions = speech_regions(self.vad.probabilities(audio), self.vad.frame)
            pieces += [(i, s / SAMPLE_RATE, audio[s:e]) for s, e in chunk_regions(regions, N_FRAMES * HOP)]
        inner = replace(options, chunking="seek", condition_on_previous_text=False)
        decoded = self.transcribe([p for _, _, p in pieces], inner, progress) if pieces else []
        results = []
        for i, audio in enumerate(audios):
            segments: list[Segment] = []
            heard: dict[str | None, float] = {}
            for (j, offset, piece), t in zip(pieces, decoded):
                if j != i:
                    continue
                heard[t.language] = heard.get(t.language, 0.0) + len(piece) / SAMPLE_RATE
                for seg in t.segments:
                    segments.append(replace(seg, id=len(segments), start=round(seg.start + offset, 3),
                                            end=round(seg.end + offset, 3)))
            language = max(heard, key=heard.get) if heard else options.language
            results.append(Transcript(text="".join(s.text for s in segments).strip(), language=language,
                                      language_probability=heard.get(language, 0.0) / max(sum(heard.values()), 1e-9),
                                      duration=len(audio) / SAMPLE_RATE, segments=segments))
        return results

    def _bytes_per_window(self, options: TranscribeOptions) -> int:
        """Memory one window adds to a decoding batch: its cross-attention keys and values, and a
        self-attention cache per beam (or sample) filled to the text context."""
        g = self.graphs
        width = max(options.beam_size, options.best_of)
        return bytes_per_token(g.n_layers, g.n_heads, g.head_dim) * (g.n_audio_ctx + width * g.n_text_ctx)

    def open_stream(self, options):
        from ...streaming.whisper import WhisperStream

        return WhisperStream(self, options)

    def detect_language(self, cross_kv: np.ndarray) -> list[list[tuple[str, float]]]:
        """Language probabilities (best first) for each window of an encoded batch."""
        _, logits = self.graphs.prefill(cross_kv, [[self.tokens.sot]] * cross_kv.shape[2])
        probs = np.exp(log_softmax(logits[:, -1, self.tokens.language_ids]))
        codes = self.tokens.language_codes
        return [sorted(zip(codes, map(float, p)), key=lambda cp: cp[1], reverse=True) for p in probs]

    # -- windows -------------------------------------------------------------------------------

    def _start(self, audio: np.ndarray, language: str | None, options: TranscribeOptions) -> _Job:
        gated = self.vad is not None and options.vad_gate is not None
        job = _Job(len(audio), _Pieces(log_mel_spectrogram(audio, self.graphs.n_mels, padding=160), N_FRAMES),
                   _Pieces(audio.astype(np.float16), N_FRAMES * HOP) if gated else None, language)
        if options.initial_prompt:
            job.all_tokens = self.tokenizer.encode(" " + options.initial_prompt.strip())
        return job

    def _window(self, job: _Job) -> tuple[np.ndarray, int]:
        size = min(N_FRAMES, job.content_frames - job.seek)
        return job.features.span(job.seek, job.seek + size), size

    def _prompt(self, job: _Job, options: TranscribeOptions) -> tuple[list[int], int]:
        """The decoder prompt and the index of its start-of-transcript token."""
        prompt: list[int] = []
        previous = job.all_tokens[job.prompt_reset_since:]
        if previous:
            prompt = [self.tokens.sot_prev] + previous[-(self.graphs.n_text_ctx // 2 - 1):]
        sot_index = len(prompt)
        prompt += self.tokens.sot_sequence(job.language, options.task)
        if options.without_timestamps:
            prompt.append(self.tokens.no_timestamps)
        return prompt, sot_index

    def _suppressed(self, options: TranscribeOptions) -> list[int]:
        ids = {t for t in options.suppress_tokens if t >= 0}
        if -1 in options.suppress_tokens:
            ids |= self._non_speech
        t = self.tokens
        return sorted(ids | {t.transcribe, t.translate, t.sot, t.sot_prev, t.sot_lm, t.no_speech})

    def _decode_windows(self, jobs: list[_Job], options: TranscribeOptions) -> None:
        windows = [self._window(j) for j in jobs]
        longest = max(size for _, size in windows)
        frames = self.graphs.window_frames(longest) if options.short_windows else N_FRAMES
        self.stats["audio"].add([size for _, size in windows], frames)
        mel = np.zeros((len(windows), self.graphs.n_mels, frames), dtype=np.float32)
        for row, (features, size) in zip(mel, windows):
            row[:, :size] = features
        cross_kv = self.graphs.encode(mel)
        unknown = [i for i, j in enumerate(jobs) if j.language is None]
        if unknown:
            subset = take_windows(cross_kv, unknown)
            for i, probs in zip(unknown, self.detect_language(subset)):
                jobs[i].language, jobs[i].language_probability = probs[0]
                jobs[i].all_language_probs = probs

        prompts = [self._prompt(j, options) for j in jobs]
        self.stats["prompt"].add([len(p) for p, _ in prompts])
        decoded = self.decode_prompts(cross_kv, prompts, options, [j.seek for j in jobs])
        for job, (_, size), d in zip(jobs, windows, decoded):
            self._advance(job, size, d, options)
            job.forget_before_seek()

    def decode_prompts(self, cross_kv: np.ndarray, prompts: list[tuple[list[int], int]],
                       options: TranscribeOptions, seeds: list[int],
                       prefixes: list[list[int]] | None = None) -> list[Decoded]:
        """Search every encoded window of `cross_kv` (axis 2) after its prompt (token ids, index of
        the start-of-transcript token) with the options' beams, filters and temperature fallback.
        Window i samples from a generator seeded by (options.seed, seeds[i]), so results do not
        depend on which other windows share the batch. `prefixes[i]`, the last tokens of prompt i,
        are a forced start of the transcript: the timestamp rules see them, the results do not
        repeat them."""
        room = self.graphs.n_text_ctx - max(len(p) for p, _ in prompts)
        # Whisper's reference decoder samples at most half the text context (224 tokens) per
        # window; a window that reaches it is a loop, which the fallback rejects anyway, so a
        # longer cap only makes each rejected try dearer (36 short clips: tries of 445 tokens)
        cap = self.graphs.n_text_ctx // 2 if options.max_new_tokens is None else options.max_new_tokens
        max_new = min(cap, room)
        search = SearchOptions(beam_size=options.beam_size, best_of=options.best_of, patience=options.patience,
                               length_penalty=options.length_penalty, max_new_tokens=max(max_new, 0),
                               min_new_tokens=min(options.min_new_tokens, max(max_new, 0)),
                               eos=(self.tokens.eot,), n_best=options.n_best, stop_loops=options.stop_loops)
        filters = [SuppressTokens(self._suppressed(options))]
        if options.suppress_blank:
            filters.append(SuppressAtStart(self.tokenizer.encode(" ") + [self.tokens.eot]))
        if not options.without_timestamps:
            max_initial = round(options.max_initial_timestamp / TIME_PRECISION) \
                if options.max_initial_timestamp is not None else None
            min_final = round(options.min_final_timestamp / TIME_PRECISION) \
                if options.min_final_timestamp is not None else None
            filters.append(TimestampRules(self.tokens, max_initial, min_final))

        def prefill(groups: list[int]) -> Prefilled:
            state, logits = self.graphs.prefill(
                take_windows(cross_kv, groups), [prompts[g][0] for g in groups],
                [prompts[g][1] for g in groups], search.max_new_tokens)
            no_speech = np.exp(log_softmax(logits[:, 0]))[:, self.tokens.no_speech]
            return Prefilled(state, logits[:, 1], filters, no_speech,
                             None if prefixes is None else [prefixes[g] for g in groups])

        rngs = [np.random.default_rng((options.seed, s)) for s in seeds]
        return decode_with_fallback(prefill, len(prompts), search, options.fallback, self.tokenizer.decode, rngs)

    def _advance(self, job: _Job, size: int, d: Decoded, options: TranscribeOptions) -> None:
        """Turn one window's result into segments and move the job's seek forward."""
        if options.no_speech_threshold is not None and d.no_speech_prob > options.no_speech_threshold and not (
                options.log_prob_threshold is not None and d.avg_logprob > options.log_prob_threshold):
            job.seek += size  # silence: skip the window
            return
        if self._vad_hears_nothing(job, size, d, options):
            job.seek += size
            return
        best = d.best
        previous_seek = job.seek
        pieces, job.seek = self._split_by_timestamps(best.tokens, job.seek, size)
        for start_i, end_i, start, end in pieces:
            tokens = best.tokens[start_i:end_i]
            text = self.tokenizer.decode(tokens)
            if start == end or not text.strip():
                continue
            job.all_tokens.extend(tokens)
            job.segments.append(Segment(
                id=len(job.segments), start=round(start, 3), end=round(end, 3), text=text, tokens=tokens,
                avg_logprob=d.avg_logprob, no_speech_prob=d.no_speech_prob,
                compression_ratio=d.compression_ratio, temperature=d.temperature, seek=previous_seek,
                token_logprobs=best.token_logprobs[start_i:end_i]))
        if not options.condition_on_previous_text or d.temperature > options.prompt_reset_on_temperature:
            job.prompt_reset_since = len(job.all_tokens)

    def _vad_hears_nothing(self, job: _Job, size: int, d: Decoded, options: TranscribeOptions) -> bool:
        if job.gate_audio is None or d.no_speech_prob <= options.vad_gate:
            return False
        window = job.gate_audio.span(job.seek * HOP, (job.seek + size) * HOP).astype(np.float32)
        return self.vad.speech_seconds(window) < MIN_SPEECH_SECONDS

    def _split_by_timestamps(self, tokens: list[int], seek: int, size: int):
        """Pieces (token slice, start and end seconds) and the next seek, by the timestamp pairs."""
        ts0 = self.tokens.timestamp_begin
        offset = seek / FRAMES_PER_SECOND
        single_ending = len(tokens) >= 2 and tokens[-2] < ts0 <= tokens[-1]
        cuts = [i for i in range(1, len(tokens)) if tokens[i] >= ts0 and tokens[i - 1] >= ts0]
        if not cuts:
            stamps = [t for t in tokens if t >= ts0]
            duration = size / FRAMES_PER_SECOND
            if stamps and stamps[-1] != ts0:
                duration = (stamps[-1] - ts0) * TIME_PRECISION
            return [(0, len(tokens), offset, offset + duration)], seek + size
        if single_ending:
            cuts.append(len(tokens))
        pieces, last = [], 0
        for cut in cuts:
            pieces.append((last, cut, offset + (tokens[last] - ts0) * TIME_PRECISION,
                           offset + (tokens[cut - 1] - ts0) * TIME_PRECISION))
            last = cut
        if single_ending:
            return pieces, seek + size
        return pieces, seek + (tokens[last - 1] - ts0) * INPUT_STRIDE

    def _transcript(self, job: _Job) -> Transcript:
        return Transcript(
            text="".join(s.text for s in job.segments).strip(), language=job.language,
            language_probability=job.language_probability, duration=job.samples / SAMPLE_RATE,
            segments=job.segments, all_language_probs=job.all_language_probs)
