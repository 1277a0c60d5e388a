"""The Qwen3-ASR family adapter: the official toolkit's prompt, batching and output parsing on the
shared search layer.

Inputs (long ones first cut into pieces of at most 20 minutes at quiet points) are grouped by
length into batches bounded by the profile's count and memory budget. Per batch: features ->
encoder windows -> audio embeddings per piece (no padding to 30 s) -> one right-padded prompt per
piece, its audio placeholders replaced by the embeddings -> greedy (or beam) search ->
language and text parsed from each piece's output, merged per input.
"""

from __future__ import annotations

from functools import cached_property
from typing import Callable

import numpy as np

from ...batching import PaddingStats, plan_batches
from ...kvcache import bytes_per_token
from ...options import TranscribeOptions
from ...package import ModelPackage
from ...profiles import Profile
from ...results import Segment, Transcript
from ...search import SearchOptions, search
from ...tokenizer import Tokenizer
from .audio import batch_features, split_long_audio
from .graphs import Qwen3ASRGraphs
from .prompt import PromptTemplate, language_name, merge_languages, parse_output

SAMPLE_RATE = 16000
HOP_LENGTH = 160               # samples per mel frame
PROMPT_OVERHEAD = 64           # prompt tokens besides the audio placeholders (template, context)
DEFAULT_MAX_NEW_TOKENS = 512   # the official toolkit's default
REFERENCE_BATCH = 32           # the toolkit's max_inference_batch_size: its feature extractor pads
                               # each batch of pieces to the longest, which touches the last frames


class Qwen3ASRModel:
    family = "qwen3_asr"
    option_defaults = {"beam_size": 1}   # the official toolkit decodes greedily

    def __init__(self, package: ModelPackage, profile: Profile):
        self.package = package
        self.profile = profile
        # tokenizers first: parsing a 150k-token vocabulary peaks at ~200 MB, which the sessions
        # then reuse instead of adding to
        self.tokenizer = Tokenizer(package.tokenizer_path)
        special = package.special_tokens
        self.audio_pad, self.pad_id = special["audio_pad"], special["endoftext"]
        self.eos = tuple(special["eos"])
        prompt = package.manifest["prompt"]
        self.template = PromptTemplate(prompt["before_context"], prompt["after_context"])
        self._default_prompt = prompt.get("default_ids")   # no context, no language: tokenized at export
        self.max_positions = package.dims.get("max_positions", 65536)
        self.graphs = Qwen3ASRGraphs(package, profile)

    @cached_property
    def prompt_tokenizer(self) -> Tokenizer:
        """The official toolkit may tokenize prompts with a patched pre-tokenizer (tooling/qwen3_asr.py);
        loaded on first use (0.4 s and ~50 MB for Qwen's vocabulary)."""
        prompt = self.package.manifest["prompt"]
        name = prompt.get("tokenizer", self.package.manifest["tokenizer"])
        if name == self.package.manifest["tokenizer"]:
            return self.tokenizer
        return Tokenizer(self.package.root / name)

    def prompt_ids(self, n_audio: int, context: str, language: str | None) -> list[int]:
        """The prompt's token ids with `n_audio` audio placeholders."""
        if not context and language is None and self._default_prompt is not None:
            ids = list(self._default_prompt)
        else:
            # as the reference tokenizes its prompt: with the tokenizer's own post-processing, if any
            ids = self.prompt_tokenizer.encode(self.template.render(context, language), add_special_tokens=True)
        at = ids.index(self.audio_pad)
        return ids[:at] + [self.audio_pad] * n_audio + ids[at + 1:]

    def open_stream(self, options):
        from ...streaming.qwen3_asr import Qwen3ASRStream

        return Qwen3ASRStream(self, options)

    def transcribe(self, audios: list[np.ndarray], options: TranscribeOptions,
                   progress: Callable[[float], None] | None = None) -> list[Transcript]:
        language = language_name(options.language)
        pieces = [(i, piece, offset) for i, audio in enumerate(audios) for piece, offset in split_long_audio(audio)]
        # features as the toolkit computes them: each piece padded to the longest of its batch
        padded = [max(len(p) for _, p, _ in pieces[s:s + REFERENCE_BATCH])
                  for s in range(0, len(pieces), REFERENCE_BATCH) for _ in pieces[s:s + REFERENCE_BATCH]]
        decoded: list[tuple[int, Segment, str | None]] = []
        max_new = DEFAULT_MAX_NEW_TOKENS if options.max_new_tokens is None else options.max_new_tokens
        self.stats = {"prompt": PaddingStats(), "audio": PaddingStats()}
        batches = plan_batches([len(p) for _, p, _ in pieces], options.batch_size or self.profile.max_batch,
                               self.profile.memory_budget_mb << 20,
                               lambda count, longest: count * self._bytes_per_piece(longest, max_new))
        done = 0
        for indices in batches:
            group = [pieces[i] for i in indices]
            self.stats["audio"].add([len(p) for _, p, _ in group])
            for (clip, piece, offset), (segment, lang) in zip(group, self._decode(
                    [p for _, p, _ in group], [padded[i] for i in indices], language, options)):
                segment.start, segment.end = round(offset, 3), round(offset + len(piece) / SAMPLE_RATE, 3)
                decoded.append((clip, segment, lang))
            done += len(indices)
            if progress:
                progress(done / len(pieces))
        decoded.sort(key=lambda d: (d[0], d[1].start))
        results = []
        for i, audio in enumerate(audios):
            mine = [(seg, lang) for clip, seg, lang in decoded if clip == i]
            for n, (seg, _) in enumerate(mine):
                seg.id = n
            results.append(Transcript(
                text="".join(seg.text for seg, _ in mine), language=merge_languages([lang for _, lang in mine]),
                language_probability=1.0, duration=len(audio) / SAMPLE_RATE, segments=[seg for seg, _ in mine]))
        return results

    def _bytes_per_piece(self, samples: int, max_new: int) -> int:
        """Memory one piece of `samples` adds to a batch: its key-value cache (prompt and the text
        it is likely to produce, no more than one token per audio token) and prefill activations."""
        d = self.package.dims
        audio_tokens = self.graphs.chunking.output_length(samples // HOP_LENGTH)
        tokens = audio_tokens + PROMPT_OVERHEAD + min(max_new, audio_tokens)
        kv = bytes_per_token(d["n_layers"], d["n_kv_heads"], d["head_dim"])
        activations = (6 * d["hidden_size"] + 3 * d.get("intermediate_size", 3 * d["hidden_size"])) * 4
        return tokens * kv + (audio_tokens + PROMPT_OVERHEAD) * activations

    def audio_prompts(self, pieces: list[np.ndarray], pad_to: list[int], context: str,
                      language: str | None) -> tuple[list[np.ndarray], list[list[int]]]:
        """(audio embeddings, prompt ids) per piece: what the decoder is prefilled with."""
        g = self.graphs
        features = batch_features(pieces, g.n_mels, pad_to)
        windows = [w for i, f in enumerate(features) for w in g.chunking.windows(i, f)]
        audio = g.encode(windows, len(pieces))
        return audio, [self.prompt_ids(len(a), context, language) for a in audio]

    def _decode(self, pieces: list[np.ndarray], pad_to: list[int], language: str | None,
                options: TranscribeOptions) -> list[tuple[Segment, str | None]]:
        g = self.graphs
        audio, prompts = self.audio_prompts(pieces, pad_to, options.context, language)
        self.stats["prompt"].add([len(p) for p in prompts])
        room = self.max_positions - max(len(p) for p in prompts)
        max_new = DEFAULT_MAX_NEW_TOKENS if options.max_new_tokens is None else options.max_new_tokens
        search_options = SearchOptions(
            beam_size=options.beam_size, best_of=options.best_of, patience=options.patience,
            length_penalty=options.length_penalty, temperature=options.temperatures[0],
            max_new_tokens=max(0, min(max_new, room)), min_new_tokens=min(options.min_new_tokens, max(0, room)),
            eos=self.eos, n_best=options.n_best, stop_loops=options.stop_loops)
        state, logits = g.prefill(prompts, audio, self.audio_pad, self.pad_id, search_options.max_new_tokens)
        # one generator per input (seeded by its length), so sampling does not depend on batch mates
        rngs = [np.random.default_rng((options.seed, len(p))) for p in pieces]
        hyps = search(state, logits, search_options, rngs=rngs)
        out = []
        for h in hyps:
            best = h[0]
            raw = self.tokenizer.decode(best.tokens, skip_special_tokens=True)
            lang, text = parse_output(raw, language)
            out.append((Segment(id=0, start=0.0, end=0.0, text=text, tokens=list(best.tokens),
                                avg_logprob=best.avg_logprob, temperature=search_options.temperature,
                                token_logprobs=best.token_logprobs), lang))
        return out
