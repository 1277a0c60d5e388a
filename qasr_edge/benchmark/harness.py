"""The measurement harness shared by the workloads: side processes, meters, table, JSON line.

A *side* is one engine in one mode (ours; the official backend; faster-whisper sequential ...).
`run_sides` starts a fresh process per side and run, alternating sides so that all of them see the
same machine load, and keeps the run with the best wall time of each side. A side process runs a
function named in its spec (`"module:function"` under qasr_edge.benchmark) and prints one JSON
object as its last line of output.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


class BenchError(RuntimeError):
    pass


# -- inside a side process ---------------------------------------------------------------------

def peak_rss_mb() -> float:
    """This process's own high-water mark: VmHWM (Linux), else ru_maxrss."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def process_age_s() -> float | None:
    """Seconds since this process started (Linux; None elsewhere): at model-ready, the cold start
    including the interpreter, the imports and the model load."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError):
        return None


class Stopwatch:
    """Seconds since creation, and named laps (`lap("load")` -> seconds since the previous lap)."""

    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> float:
        now = time.perf_counter()
        self.laps[name] = now - self.last
        self.last = now
        return self.laps[name]


class _WatchedBinding:
    """An IO binding that remembers the shape [rows, seq] of the new tokens it was given."""

    TOKEN_INPUTS = ("tokens", "token_embeds", "inputs_embeds")

    def __init__(self, binding):
        self.binding, self.shape = binding, (0, 1)

    def bind_cpu_input(self, name, array):
        if name in self.TOKEN_INPUTS:
            self.shape = tuple(array.shape[:2])
        return self.binding.bind_cpu_input(name, array)

    def __getattr__(self, name):
        return getattr(self.binding, name)


class TimedSession:
    """Wraps an ONNX Runtime session: counts and times its `run` calls.

    A call is a *step* when it extends a cache that is not empty (an input named `past*` with
    elements); the first call of a decode (the prompt, empty cache) is a *prefill*. Through IO
    binding, a call that feeds one new token per row is a step, any other a prefill. Everything else
    passes through unchanged.
    """

    def __init__(self, session):
        self._session = session
        self.prefill_calls = self.step_calls = self.step_rows = 0
        self.prefill_s = self.step_s = 0.0

    def _record(self, seconds: float, step: bool, rows: int = 0) -> None:
        if step:
            self.step_calls += 1
            self.step_rows += rows
            self.step_s += seconds
        else:
            self.prefill_calls += 1
            self.prefill_s += seconds

    def run(self, output_names, feeds, *args, **kwargs):
        start = time.perf_counter()
        out = self._session.run(output_names, feeds, *args, **kwargs)
        past = [v for k, v in feeds.items() if k.startswith("past")]
        first = next(iter(feeds.values()), None)
        rows = first.shape[0] if getattr(first, "ndim", 0) else 0   # the batch: groups x beams
        self._record(time.perf_counter() - start, any(getattr(v, "size", 0) for v in past), rows)
        return out

    def io_binding(self):
        return _WatchedBinding(self._session.io_binding())

    def run_with_iobinding(self, binding, *args, **kwargs):
        start = time.perf_counter()
        watched = isinstance(binding, _WatchedBinding)
        out = self._session.run_with_iobinding(binding.binding if watched else binding, *args, **kwargs)
        rows, seq = binding.shape if watched else (0, 1)
        self._record(time.perf_counter() - start, seq == 1, rows)   # one new token per row: a step
        return out

    def __getattr__(self, name):
        return getattr(self._session, name)

    @property
    def calls(self) -> int:
        return self.prefill_calls + self.step_calls

    def report(self) -> dict[str, Any]:
        return {"decoder_steps": self.step_calls, "decoder_prefills": self.prefill_calls,
                "step_s": round(self.step_s, 4), "prefill_s": round(self.prefill_s, 4),
                "ms_per_step": round(1000 * self.step_s / self.step_calls, 3) if self.step_calls else None,
                "rows_per_step": round(self.step_rows / self.step_calls, 2) if self.step_calls else None}


def meter(model, session: str = "decoder") -> TimedSession | None:
    """Wrap a loaded qasr_edge Model's `family.graphs.<session>` in a TimedSession, from outside the
    family (None, and no per-step numbers, if the family keeps its sessions elsewhere)."""
    graphs = getattr(model.family, "graphs", None)
    if graphs is None or not hasattr(graphs, session):
        return None
    timed = TimedSession(getattr(graphs, session))
    setattr(graphs, session, timed)
    return timed


def side_main(argv: list[str]) -> None:
    """Entry point of a side process: run the function named by the spec, print its JSON result."""
    spec = json.loads(argv[0])
    module, function = spec["side"].split(":")
    fn: Callable[[dict], dict] = getattr(importlib.import_module(f"qasr_edge.benchmark.{module}"), function)
    result = fn(spec)
    result.setdefault("peak_rss_mb", round(peak_rss_mb(), 1))
    sys.stdout.flush()
    print(json.dumps(result), flush=True)


# -- in the parent -----------------------------------------------------------------------------

@dataclass
class Side:
    label: str                  # a short name for the table ("qasr_edge", "faster-whisper batched")
    spec: dict[str, Any]        # passed to the side process; "side" names "module:function"
    peer: bool = False
    runs: list[dict] = field(default_factory=list)

    @property
    def best(self) -> dict:
        return min(self.runs, key=lambda r: r["wall_s"])


def run_process(spec: dict[str, Any], timeout: float | None = None) -> dict:
    """Run one side spec in a fresh interpreter; its last stdout line is its JSON result."""
    # the same qasr_edge as this process, whatever the working directory holds (a source checkout
    # there would shadow the installed package, which has the compiled core)
    root = str(Path(__file__).resolve().parents[2])
    code = f"import sys; sys.path.insert(0, {root!r}); from qasr_edge.benchmark.harness import side_main; " \
           "side_main(sys.argv[1:])"
    done = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                          timeout=timeout)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join((done.stderr + done.stdout).strip().splitlines()[-15:])
        raise BenchError(f"side {spec['side']} failed (exit {done.returncode}):\n{tail}")
    return json.loads(lines[-1])


def run_sides(sides: list[Side], repeat: int, log: Callable[[str], None]) -> None:
    for r in range(repeat):
        for side in sides:
            log(f"run {r + 1}/{repeat}: {side.label} ...")
            result = run_process(side.spec)
            side.runs.append(result)
            log(f"  {side.label}: wall {result['wall_s']:.2f} s, load {result['load_s']:.2f} s, "
                f"peak RSS {result['peak_rss_mb']:.0f} MB")


def machine() -> dict[str, Any]:
    import onnxruntime

    from .. import __version__

    info = {"date": datetime.date.today().isoformat(), "platform": platform.platform(),
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "qasr_edge": __version__, "onnxruntime": onnxruntime.__version__}
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return info


def summary(ours: Side, peers: list[Side], extra: dict[str, Any]) -> dict[str, Any]:
    """The JSON line: our best run's numbers, then peer_* from the first peer, all peers under `peers`."""
    best = dict(ours.best)
    out: dict[str, Any] = {k: best[k] for k in ("wall_s", "audio_s", "load_s", "peak_rss_mb")}
    out["audio_s_per_wall_s"] = round(best["audio_s"] / best["wall_s"], 3) if best["wall_s"] else None
    out["rtf"] = round(best["wall_s"] / best["audio_s"], 4) if best["audio_s"] else None
    out.update({k: v for k, v in best.items() if k not in out})
    out["runs_wall_s"] = [r["wall_s"] for r in ours.runs]
    out["peers"] = []
    for side in peers:
        p = dict(side.best)
        p["runs_wall_s"] = [r["wall_s"] for r in side.runs]
        p["audio_s_per_wall_s"] = round(p["audio_s"] / p["wall_s"], 3) if p["wall_s"] else None
        out["peers"].append(p)
    if peers:
        first = out["peers"][0]
        for k in ("wall_s", "load_s", "peak_rss_mb", "audio_s_per_wall_s", "ms_per_step", "tokens"):
            out[f"peer_{k}"] = first.get(k)
        out["peer"] = first["peer"]
        out["wall_ratio"] = round(out["wall_s"] / first["wall_s"], 3)
    out.update(extra)
    return out


COLUMNS = (("wall s", "wall_s", "{:.2f}"), ("audio s/wall s", "audio_s_per_wall_s", "{:.2f}"),
           ("load s", "load_s", "{:.2f}"), ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
           ("tokens", "tokens", "{}"), ("ms/step", "ms_per_step", "{:.1f}"))


def table(rows: list[tuple[str, dict]]) -> str:
    """A plain-text table, one line per side (best run)."""
    width = max(len(label) for label, _ in rows) + 2
    head = f"{'side':<{width}}" + "".join(f"{name:>15}" for name, _, _ in COLUMNS)
    lines = [head]
    for label, r in rows:
        r = {**r, "audio_s_per_wall_s": r["audio_s"] / r["wall_s"] if r.get("wall_s") else None}
        cells = ["-" if r.get(key) is None else fmt.format(r[key]) for _, key, fmt in COLUMNS]
        lines.append(f"{label:<{width}}" + "".join(f"{c:>15}" for c in cells))
    return "\n".join(lines)


def report(ours: Side, peers: list[Side], extra: dict[str, Any], notes: list[str], as_json: bool) -> dict:
    """Print the table, the ratios and the notes; with `as_json`, the JSON object as the last line."""
    result = summary(ours, peers, extra)
    print(table([(ours.label, ours.best)] + [(p.label, p.best) for p in peers]))
    for p in peers:
        b = p.best
        print(f"qasr_edge / {p.label}: wall {ours.best['wall_s'] / b['wall_s']:.2f}x, "
              f"load {ours.best['load_s'] / b['load_s']:.2f}x, "
              f"peak RSS {ours.best['peak_rss_mb'] / b['peak_rss_mb']:.2f}x")
    for note in notes:
        print(f"note: {note}")
    if as_json:
        print(json.dumps(result), flush=True)
    return result
