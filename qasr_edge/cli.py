"""The `qasr-edge` command: transcribe, stream, dictate, serve, export, models, profiles, bench."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from . import __version__
from .benchmark.command import add_bench_parser, cmd_bench
from .options import CHUNKING
from .package import PRECISIONS
from .writers import FORMATS


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", default="whisper-base", help="package folder, checkpoint folder or registry name")
    p.add_argument("--profile", "-p", default=None, help="device profile name or .toml path (default: cpu)")
    p.add_argument("--threads", "-t", type=int, default=None, help="intra-op threads (default: the profile's)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="precision of a registry model (default: the profile's)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qasr-edge", description="Offline speech-to-text on the device.")
    parser.add_argument("--version", action="version", version=f"qasr_edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("transcribe", help="transcribe audio files")
    t.add_argument("audio", nargs="+", help="audio or video files")
    _add_runtime_args(t)
    t.add_argument("--language", "-l", default=None, help="language code or name (default: detect)")
    t.add_argument("--task", choices=("transcribe", "translate"), default="transcribe")
    t.add_argument("--beam-size", "-b", type=int, default=None,
                   help="beams (default: the model family's, 5 for Whisper, 1 for Qwen3-ASR)")
    t.add_argument("--best-of", type=int, default=5)
    t.add_argument("--temperature", type=float, nargs="+", default=None, help="temperature(s) for fallback")
    t.add_argument("--max-new-tokens", type=int, default=None,
                   help="tokens generated per window at most (default: Whisper 224, Qwen3-ASR 512)")
    t.add_argument("--initial-prompt", default=None)
    t.add_argument("--context", default="", help="context text (Qwen3-ASR)")
    t.add_argument("--without-timestamps", action="store_true")
    t.add_argument("--no-condition-on-previous-text", action="store_true")
    t.add_argument("--no-vad-gate", action="store_true",
                   help="keep windows that Whisper thinks silent even when the voice-activity detector hears no speech")
    t.add_argument("--batch-size", type=int, default=None, help="windows decoded together")
    t.add_argument("--chunking", choices=CHUNKING, default="seek",
                   help="Whisper long audio: seek = sequential 30 s windows conditioned on the previous text; "
                        "vad = cut at silences into <= 30 s chunks decoded in parallel (faster)")
    t.add_argument("--short-windows", action="store_true",
                   help="Whisper: encode audio shorter than 30 s at its length plus 5 s or more (2.6x faster "
                        "on 36 short clips; costs some accuracy: BENCHMARKS.md)")
    t.add_argument("--format", "-f", choices=FORMATS, default="txt")
    t.add_argument("--output-dir", "-o", default=None, help="write <name>.<format> files here instead of stdout")

    e = sub.add_parser("export", help="export a checkpoint into a model package (needs qasr_edge[export])")
    e.add_argument("source", help="CTranslate2 or Hugging Face checkpoint folder, or a registry name")
    e.add_argument("--output", "-o", required=True)
    e.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="weights to build (default: the --profile's precision, fp32 for the cpu profile); int8: "
                        "dynamic; int4: weight-only block-wise (decoder); int8-static: QDQ, needs --calibration; "
                        "fp16: for GPU profiles (docs/model-package.md)")
    e.add_argument("--profile", "-p", default=None, help="device profile whose precision to build")
    e.add_argument("--block-size", type=int, default=None,
                   help="int4: rows per quantization block (16, 32, 64, 128 or 256; default 64)")
    e.add_argument("--calibration", nargs="+", default=[], metavar="AUDIO",
                   help="int8-static: audio files to calibrate activation ranges on (speech like the real input)")
    e.add_argument("--name", default=None)
    e.add_argument("--overwrite", action="store_true")

    for name, text in (("stream", "transcribe a file or raw PCM on stdin as a live stream (JSONL events)"),
                       ("dictate", "live text from the microphone"),
                       ("serve", "serve live streams over TCP, one per connection (JSONL events back)")):
        st = sub.add_parser(name, help=text)
        if name == "stream":
            st.add_argument("audio", help="audio file, or - for raw 16 kHz 16-bit mono PCM on stdin")
            st.add_argument("--realtime", action="store_true", help="feed the file at real speed (default: as fast as possible)")
            st.add_argument("--connect", default=None, metavar="HOST:PORT",
                            help="send the audio to a `qasr-edge serve` server and print its events (the model "
                                 "options are the server's; the stream options given here go with the audio)")
        elif name == "dictate":
            st.add_argument("--device", default=None, help="input device (number or name; default: the system's)")
            st.add_argument("--connect", default=None, metavar="HOST:PORT",
                            help="send the microphone's audio to a `qasr-edge serve` server and show its text")
        else:
            st.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
            st.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0: any free one, printed)")
            st.add_argument("--workers", type=int, default=None,
                            help="threads that decode the streams, the model loaded with threads / workers "
                                 "intra-op threads (default: one worker per thread)")
            st.add_argument("--max-streams", type=int, default=4, help="connections decoded at once; more are refused")
            st.add_argument("--idle-timeout", type=float, default=60.0,
                            help="seconds: a client that sends nothing this long has ended its audio; one that "
                                 "reads nothing this long is dropped")
        _add_runtime_args(st)
        st.add_argument("--language", "-l", default=None, help="language code (default: detect per utterance)")
        st.add_argument("--context", default="", help="text that comes before the stream")
        st.add_argument("--chunk-ms", type=int, default=None, help="decode every this much audio (default: the profile's, 640)")
        st.add_argument("--endpoint-ms", type=int, default=None,
                        help="silence that ends an utterance (default: 1500 for Whisper, 800 for Qwen3-ASR)")
        st.add_argument("--beam-size", "-b", type=int, default=None,
                        help="Whisper: beams per update (default: the profile's, 5 on x86-64)")
        st.add_argument("--commit-prob", type=float, default=None,
                        help="Whisper: commit a word without waiting for the next hypothesis when the decoder "
                             "chose each of its tokens with at least this probability (default 1: always "
                             "wait; 0.95 cuts the lag a little and costs accuracy)")
        st.add_argument("--no-partials", action="store_true", help="emit final events only")

    m = sub.add_parser("models", help="list model packages")
    m.add_argument("action", nargs="?", choices=("list",), default="list")
    m.add_argument("--json", action="store_true")

    sub.add_parser("profiles", help="list device profiles")
    add_bench_parser(sub)
    return parser


def _progress(fraction: float) -> None:
    sys.stderr.write(f"\r{fraction * 100:5.1f}%")
    sys.stderr.flush()


def cmd_transcribe(args) -> int:
    from .model import load_model
    from .writers import render, write

    model = load_model(args.model, profile=args.profile, threads=args.threads, precision=args.precision)
    show_progress = len(args.audio) > 1 and sys.stderr.isatty()
    options = dict(language=args.language, task=args.task, beam_size=args.beam_size, best_of=args.best_of,
                   max_new_tokens=args.max_new_tokens, initial_prompt=args.initial_prompt, context=args.context,
                   without_timestamps=args.without_timestamps, batch_size=args.batch_size, chunking=args.chunking,
                   short_windows=args.short_windows, condition_on_previous_text=not args.no_condition_on_previous_text)
    if args.beam_size is None:
        del options["beam_size"]
    if args.temperature:
        options["temperatures"] = tuple(args.temperature)
    if args.no_vad_gate:
        options["vad_gate"] = None
    results = model.transcribe(args.audio, progress=_progress if show_progress else None, **options)
    if show_progress:
        sys.stderr.write("\n")
    failed = 0
    for path, t in zip(args.audio, results):
        if t.error:
            failed += 1
            print(f"qasr-edge: error: {t.error}", file=sys.stderr)
        if args.output_dir:
            if not t.error:
                write(t, args.format, args.output_dir, Path(path).stem)
        elif args.format in ("json", "jsonl"):
            sys.stdout.write(json.dumps(t.to_dict(), ensure_ascii=False) + "\n")
        elif not t.error:
            sys.stdout.write(render(t, args.format))
        sys.stdout.flush()
    if failed:
        print(f"qasr-edge: {failed} of {len(results)} inputs failed", file=sys.stderr)
    return 1 if failed else 0


def _stream_options(args) -> dict:
    """The stream options given on the command line (the others stay the model's and profile's)."""
    given = dict(language=args.language, context=args.context, chunk_ms=args.chunk_ms, endpoint_ms=args.endpoint_ms,
                 beam_size=args.beam_size, commit_prob=args.commit_prob)
    return {**{k: v for k, v in given.items() if v not in (None, "")}, **({"partials": False} if args.no_partials else {})}


def _open_stream(args):
    from .model import load_model

    model = load_model(args.model, profile=args.profile, threads=args.threads, precision=args.precision)
    return model.stream(**_stream_options(args))


def _remote(args) -> tuple[str, int, dict, int]:
    """--connect HOST:PORT: (host, port, the stream options to send, samples per piece sent)."""
    from .streaming.events import SAMPLE_RATE

    host, _, port = args.connect.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--connect takes HOST:PORT, got {args.connect!r}")
    options = _stream_options(args)
    return host, int(port), options, (options.get("chunk_ms") or 640) * SAMPLE_RATE // 1000


def _print_jsonl(rows) -> None:
    for row in rows:
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def cmd_stream(args) -> int:
    from .streaming.sources import file_chunks, paced, pcm_chunks

    if args.connect:
        from .streaming.server import stream_to_server

        host, port, options, size = _remote(args)
    else:
        session = _open_stream(args)
        size = session.options.chunk_samples
    chunks = pcm_chunks(sys.stdin.buffer, size) if args.audio == "-" else file_chunks(args.audio, size)
    if args.realtime:
        chunks = paced(chunks)
    if args.connect:
        failed = False
        for event in stream_to_server(host, port, chunks, options):
            failed = failed or event.get("type") == "error"
            _print_jsonl([event])
        return 1 if failed else 0
    for chunk in chunks:
        _print_jsonl(e.to_dict() for e in session.feed(chunk))
    _print_jsonl(e.to_dict() for e in session.finish())
    return 0


def cmd_serve(args) -> int:
    from .model import load_model
    from .profiles import load_profile
    from .streaming.server import StreamServer

    threads = load_profile(args.profile).with_threads(args.threads).threads
    workers = args.workers or threads
    if workers < 1:
        raise ValueError("--workers must be >= 1")
    model = load_model(args.model, profile=args.profile, threads=max(1, threads // workers), precision=args.precision)
    with StreamServer(model, args.host, args.port, workers=workers, max_streams=args.max_streams,
                      defaults=_stream_options(args), idle_timeout=args.idle_timeout) as server:
        host, port = server.address
        print(f"qasr-edge: serving {model.package.name} on {host}:{port} ({workers} workers, up to "
              f"{args.max_streams} streams); send 16 kHz 16-bit mono PCM per connection", file=sys.stderr, flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


def cmd_dictate(args) -> int:
    import threading

    from .streaming.sources import microphone_chunks

    device = int(args.device) if args.device is not None and args.device.isdigit() else args.device
    if args.connect:
        host, port, options, size = _remote(args)
    else:
        session = _open_stream(args)
        size = session.options.chunk_samples
    live = sys.stdout.isatty()
    line, partial = "", ""   # committed text of the current terminal line; the guess after it

    def show(events) -> None:
        nonlocal line, partial
        for e in events:
            if e.type == "final":
                line, partial = line + e.text, ""
                if not live:
                    sys.stdout.write(e.text)
            else:
                partial = e.text
        if live:   # the line so far, the partial after it (replaced by the next one)
            sys.stdout.write("\r\033[K" + line.strip() + ("\033[2m" + partial + "\033[0m" if partial else ""))
            if len(line) > 72:
                sys.stdout.write("\r\033[K" + line.strip() + "\n")
                line = ""
        sys.stdout.flush()

    microphone = microphone_chunks(size, device)
    first = next(microphone, None)   # a missing device fails here, before a connection is made
    captured = itertools.chain([first] if first is not None else [], microphone)
    if not args.connect:
        try:
            for chunk in captured:
                show(session.feed(chunk))
        except KeyboardInterrupt:
            pass
        show(session.finish())
        sys.stdout.write("\n")
        return 0

    # the server's events are read on a thread, so that Ctrl-C here only ends the audio: the
    # server then commits what it got and closes the connection
    from .streaming.events import StreamEvent
    from .streaming.server import stream_to_server

    stop, done, errors = threading.Event(), threading.Event(), []

    def audio():
        for chunk in captured:
            if stop.is_set():
                return
            yield chunk

    def receive() -> None:
        try:
            for row in stream_to_server(host, port, audio(), options):
                if row["type"] == "error":
                    print(f"qasr-edge: server: {row['message']}", file=sys.stderr)
                else:
                    show([StreamEvent.from_dict(row)])
        except Exception as exc:   # reported by the main thread
            errors.append(exc)
        finally:
            done.set()

    threading.Thread(target=receive, daemon=True, name="qasr-dictate").start()
    try:
        done.wait()
    except KeyboardInterrupt:
        stop.set()
        done.wait()
    sys.stdout.write("\n")
    if errors:
        raise errors[0]
    return 0


def cmd_export(args) -> int:
    from .profiles import load_profile
    from .registry import REGISTRY, home
    from .tooling.export import export, quantize_options

    precision = args.precision or load_profile(args.profile).precision
    quantize_options(precision, args.block_size, args.calibration)  # fail fast, before fetching weights
    source = Path(args.source)
    if not source.exists() and args.source in REGISTRY:
        source = REGISTRY[args.source].fetch(home() / "sources" / args.source)
    out = export(source, args.output, precision=precision, name=args.name or Path(args.source).name,
                 overwrite=args.overwrite, block_size=args.block_size, calibration=args.calibration)
    print(out)
    return 0


def cmd_models(args) -> int:
    from .registry import local_models

    rows = local_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        where = r["path"] or r.get("note", "")
        size = f"{r['size_mb']:.1f} MB" if r["size_mb"] is not None else "-"
        print(f"{r['name']:<24} {r['family']:<10} {r['precision']:<6} {size:>10}  {where}")
    return 0


def cmd_profiles(args) -> int:
    from .profiles import list_profiles, load_profile

    for name in list_profiles():
        prof = load_profile(name)
        usable, note = prof.availability()
        print(f"{name:<16} {'yes' if usable else 'no':<4} {prof.description}")
        print(f"{'':<21}{note}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {"transcribe": cmd_transcribe, "export": cmd_export, "models": cmd_models,
               "profiles": cmd_profiles, "bench": cmd_bench,
               "stream": cmd_stream, "dictate": cmd_dictate, "serve": cmd_serve}[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line, no traceback; QASR_EDGE_DEBUG=1 shows it
        import os

        if os.environ.get("QASR_EDGE_DEBUG"):
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"qasr-edge: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
