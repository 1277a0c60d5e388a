"""The Qwen3-ASR family adapter: the official toolkit's prompt, batching and output parsing on the
shared search layer.

Per batch of inputs (long ones first cut into pieces of at most 20 minutes at quiet points):
features of the batch -> encoder windows -> audio embeddings per piece -> one left-padded prompt
per piece, its audio placeholders replaced by the embeddings -> greedy (or beam) search ->
language and text parsed from each piece's output, merged per input.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

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
DEFAULT_MAX_NEW_TOKENS = 512   # the official toolkit's default
REFERENCE_BATCH = 32           # the toolkit's max_inference_batch_size: its feature extractor pads
                               # each batch of pieces to the longest, which touches the last frames


class Qwen3ASRModel:
    family = "qwen3_asr"
    option_defaults = {"beam_size": 1}   # the official toolkit decodes greedily

    def __init__(self, package: ModelPackage, profile: Profile):
        self.package = package
        self.profile = profile
        self.graphs = Qwen3ASRGraphs(package, profile)
        self.tokenizer = Tokenizer(package.tokenizer_path)
        special = package.special_tokens
        self.audio_pad, self.pad_id = special["audio_pad"], special["endoftext"]
        self.eos = tuple(special["eos"])
        prompt = package.manifest["prompt"]
        self.template = PromptTemplate(prompt["before_context"], prompt["after_context"])
        # the official toolkit may tokenize prompts with a patched pre-tokenizer (tooling/qwen3_asr.py)
        self.prompt_tokenizer = Tokenizer(package.root / prompt.get("tokenizer", package.manifest["tokenizer"]))
        self.max_positions = package.dims.get("max_positions", 65536)

    def prompt_ids(self, n_audio: int, context: str, language: str | None) -> list[int]:
        """The prompt's token ids with `n_audio` audio placeholders."""
        # as the reference tokenizes its prompt: with the tokenizer's own post-processing, if any
        ids = self.prompt_tokenizer.encode(self.template.render(context, language), add_special_tokens=True)
        at = ids.index(self.audio_pad)
        return ids[:at] + [self.audio_pad] * n_audio + ids[at + 1:]

    def transcribe(self, audios: list[np.ndarray], options: TranscribeOptions,
                   progress: Callable[[float], None] | None = None) -> list[Transcript]:
        language = language_name(options.language)
        pieces = [(i, piece, offset) for i, audio in enumerate(audios) for piece, offset in split_long_audio(audio)]
        # features as the toolkit computes them: each piece padded to the longest of its batch
        padded = [max(len(p) for _, p, _ in pieces[s:s + REFERENCE_BATCH])
                  for s in range(0, len(pieces), REFERENCE_BATCH) for _ in pieces[s:s + REFERENCE_BATCH]]
        decoded: list[tuple[int, Segment, str | None]] = []
        batch = options.batch_size or self.profile.max_batch
        for start in range(0, len(pieces), batch):
            group = pieces[start:start + batch]
            for (clip, piece, offset), (segment, lang) in zip(group, self._decode(
                    [p for _, p, _ in group], padded[start:start + batch], language, options)):
                segment.start, segment.end = round(offset, 3), round(offset + len(piece) / SAMPLE_RATE, 3)
                decoded.append((clip, segment, lang))
            if progress:
                progress(min(start + batch, len(pieces)) / len(pieces))
        results = []
        for i, audio in enumerate(audios):
            mine = [(seg, lang) for clip, seg, lang in decoded if clip == i]
            for n, (seg, _) in enumerate(mine):
                seg.id = n
            results.append(Transcript(
                text="".join(seg.text for seg, _ in mine), language=merge_languages([lang for _, lang in mine]),
                language_probability=1.0, duration=len(audio) / SAMPLE_RATE, segments=[seg for seg, _ in mine]))
        return results

    def _decode(self, pieces: list[np.ndarray], pad_to: list[int], language: str | None,
                options: TranscribeOptions) -> list[tuple[Segment, str | None]]:
        g = self.graphs
        features = batch_features(pieces, g.n_mels, pad_to)
        windows = [w for i, f in enumerate(features) for w in g.chunking.windows(i, f)]
        audio = g.encode(windows, len(pieces))
        prompts = [self.prompt_ids(len(a), options.context, language) for a in audio]
        room = self.max_positions - max(len(p) for p in prompts)
        max_new = DEFAULT_MAX_NEW_TOKENS if options.max_new_tokens is None else options.max_new_tokens
        search_options = SearchOptions(
            beam_size=options.beam_size, best_of=options.best_of, patience=options.patience,
            length_penalty=options.length_penalty, temperature=options.temperatures[0],
            max_new_tokens=max(0, min(max_new, room)), min_new_tokens=min(options.min_new_tokens, max(0, room)),
            eos=self.eos, n_best=options.n_best)
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
