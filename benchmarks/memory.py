"""Clip memory benchmark: search latency and recall, store open time, a bounded 24 h stream.

Run: ``python benchmarks/memory.py`` (about 10-15 minutes on 2 cores; ``--quick`` for a
smoke run). Writes ``benchmarks/results/memory.md``.

* Search: synthetic unit vectors with cluster structure (dim 1280, the lite encoder's
  pooled dimension), queries are perturbed stored vectors; recall@10 against exact search.
  10k and 100k go through :class:`memory.store.MemoryStore` (auto index: exact at 10k,
  IVF at 100k); 1M uses the store's IVF index class directly (building 1M clip objects and
  5 GB of segment files would measure the disk, not the search).
* Open: time to open the 100k store read-only, and to answer its first query.
* Stream: a simulated 24-hour camera, one clip per 4 s with 32 kept tokens, committed
  every minute of stream time into a store bounded to 2,000 clips; RSS and disk sampled
  every stream hour.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]  # this file is not the package
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memory.index import VecIndex, ivf_nlist  # noqa: E402
from memory.store import MemoryStore, StoreSpec  # noqa: E402
from streamvid.config import MemoryConfig  # noqa: E402
from streamvid.types import ClipMemory  # noqa: E402

DIM = 1280
K = 10
OUT = Path(__file__).resolve().parent / "results" / "memory.md"


def rss_mib() -> tuple[float, float, float]:
    """Resident memory in MiB: total, anonymous (heap, indexes), file-backed (mapped store
    files, reclaimable page cache)."""
    vals = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                vals[key] = int(rest.split()[0]) / 1024
    return vals.get("VmRSS", 0.0), vals.get("RssAnon", 0.0), vals.get("RssFile", 0.0)


def dir_mib(p: Path) -> float:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 2**20


def clustered(n: int, dim: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    out = np.empty((n, dim), np.float32)
    step = 50_000
    for a in range(0, n, step):
        b = min(n, a + step)
        x = centres[rng.integers(len(centres), size=b - a)]
        x = x + 0.6 * rng.standard_normal((b - a, dim), dtype=np.float32)
        out[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_topk(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k by brute force in chunks (no copy of ``x``)."""
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.zeros((len(q), k), np.int64)
    step = 100_000
    for a in range(0, len(x), step):
        s = q @ x[a:a + step].T
        s_all = np.concatenate([best_s, s], axis=1)
        i_all = np.concatenate([best_i, np.arange(a, a + s.shape[1])[None].repeat(len(q), 0)], 1)
        top = np.argpartition(-s_all, k - 1, axis=1)[:, :k]
        best_s = np.take_along_axis(s_all, top, 1)
        best_i = np.take_along_axis(i_all, top, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, 1)


def queries_from(x: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    # a stored vector moved by a perturbation of norm ~0.3 (a near-duplicate moment)
    q = x[rng.integers(len(x), size=n)] + (0.3 / np.sqrt(x.shape[1])) * rng.standard_normal(
        (n, x.shape[1]), dtype=np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def latency(search, qs: np.ndarray) -> tuple[float, float, list[list[int]]]:
    times, results = [], []
    for q in qs:
        t = time.perf_counter()
        results.append(search(q))
        times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99)), results


def recall(results: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(r[:K]) & set(t[:K].tolist())) / K
                          for r, t in zip(results, truth)]))


def bench_store(n: int, rng, centres, tmp: Path, nq: int, rows: list, open_rows: list) -> None:
    x = clustered(n, DIM, rng, centres)
    spec = StoreSpec("bench", DIM, "bench-text", 8, {})
    path = tmp / f"store-{n}"
    t = time.perf_counter()
    with MemoryStore.open(path, spec, mode="w", config=MemoryConfig()) as store:
        step = 20_000
        for a in range(0, n, step):
            store.add([ClipMemory("cam", 4.0 * i, 4.0 * i + 4.0, x[i])
                       for i in range(a, min(n, a + step))])
        store.commit()
    build = time.perf_counter() - t
    t = time.perf_counter()
    store = MemoryStore.open(path, spec, mode="r")
    t_open = time.perf_counter() - t
    qs = queries_from(x, rng, nq)
    t = time.perf_counter()
    store.search(qs[0], K)
    t_first = time.perf_counter() - t
    truth = exact_topk(x, qs, K)
    p50, p99, res = latency(lambda q: [i for i, _ in store.search(q, K)], qs)
    kind = store.index_kind
    rows.append((f"{n:,}", f"store, {kind}" + (f" (nprobe {store.config.nprobe})"
                                              if kind == "ivf" else ""),
                 p50, p99, recall(res, truth), f"{build:.0f} s"))
    # filtered search: one source, a time window of a tenth of the span
    lo = 4.0 * n * 0.45
    p50f, p99f, _ = latency(lambda q: store.search(q, K, time_range=(lo, lo + 0.1 * 4.0 * n)),
                            qs[:50])
    rows.append((f"{n:,}", f"store, {kind}, time filter (10 % of span)", p50f, p99f, None, ""))
    open_rows.append((f"{n:,}", t_open, t_first, dir_mib(path)))
    store.close()
    shutil.rmtree(path)


def bench_1m(n: int, rng, centres, nq: int, rows: list, nprobe: int) -> None:
    x = clustered(n, DIM, rng, centres)
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # build with every core, search with one
    t = time.perf_counter()
    cents = VecIndex.train_centroids(x, ivf_nlist(n))
    idx = VecIndex("ivf", DIM, nprobe=nprobe, centroids=cents)
    step = 100_000
    for a in range(0, n, step):
        b = min(n, a + step)
        idx.add(np.arange(a, b, dtype=np.int64), x[a:b])
    build = time.perf_counter() - t
    faiss.omp_set_num_threads(1)
    qs = queries_from(x, rng, nq)
    truth = exact_topk(x, qs, K)
    for probe in sorted({16, 24, 32, nprobe, 2 * nprobe}):
        idx.index.nprobe = probe
        p50, p99, res = latency(lambda q: idx.index.search(q[None], K)[1][0].tolist(), qs)
        rows.append((f"{n:,}", f"IVF index ({cents.shape[0]} lists, nprobe {probe})", p50, p99,
                     recall(res, truth), f"{build:.0f} s"))
    p50e, p99e, _ = latency(lambda q: np.argpartition(-(x @ q), K)[:K].tolist(), qs[:20])
    rows.append((f"{n:,}", "exact brute force (numpy) for reference", p50e, p99e, 1.0, ""))


def bench_stream(hours: float, tmp: Path, capacity: int, tokens: int) -> dict:
    rng = np.random.default_rng(7)
    spec = StoreSpec("bench", DIM, "bench-text", 8, {})
    cfg = MemoryConfig(capacity_clips=capacity)
    path = tmp / "stream"
    scenes = rng.standard_normal((200, DIM)).astype(np.float32)
    samples = []
    clip_len, commit_every = 4.0, 60.0
    n_clips = int(hours * 3600 / clip_len)
    t0 = time.perf_counter()
    with MemoryStore.open(path, spec, mode="w", config=cfg) as store:
        batch = []
        scene = 0
        for i in range(n_clips):
            if rng.random() < 0.03:
                scene = int(rng.integers(len(scenes)))
            v = scenes[scene] + 0.5 * rng.standard_normal(DIM, dtype=np.float32)
            v /= np.linalg.norm(v)
            tk = (v[None] + 0.3 * rng.standard_normal((tokens, DIM), dtype=np.float32))
            s = i * clip_len
            batch.append(ClipMemory("cam", s, s + clip_len, v.astype(np.float32),
                                    keyframes=(s,), tokens=tk.astype(np.float16),
                                    token_times=np.full(tokens, s, np.float32),
                                    token_positions=np.arange(tokens, dtype=np.int32),
                                    description=f"scene {scene}", labels=(("thing", 0.5),)))
            if (s + clip_len) % commit_every == 0:
                store.add(batch)
                store.commit()
                batch = []
            if (s + clip_len) % 3600 == 0:
                samples.append((int((s + clip_len) // 3600), rss_mib(), dir_mib(path), len(store),
                                store.manifest["counts"]["merges"]))
        store.add(batch)
        store.commit()
        m = store.manifest
        spans = sorted((c.start, c.end) for c in store.get(store.ids()))
    gaps = sum(1 for a, b in zip(spans, spans[1:]) if b[0] > a[1] + 1e-6)
    elapsed = time.perf_counter() - t0
    return {"samples": samples, "manifest": m, "gaps": gaps, "covered": (spans[0][0], spans[-1][1]),
            "elapsed": elapsed, "n_clips": n_clips}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--nprobe", type=int, default=MemoryConfig().nprobe)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    os.environ.setdefault("STREAMVID_PROGRESS", "0")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((10_000, DIM)).astype(np.float32)
    sizes = [2_000, 20_000] if args.quick else [10_000, 100_000]
    big = 100_000 if args.quick else 1_000_000
    hours = 2.0 if args.quick else 24.0
    capacity = 500 if args.quick else 2000
    nq = 100 if args.quick else 200
    tmp = Path(tempfile.mkdtemp(prefix="svbench-"))
    rows: list = []
    open_rows: list = []
    try:
        for n in sizes:
            print(f"store {n}", flush=True)
            bench_store(n, rng, centres, tmp, nq, rows, open_rows)
        print(f"ivf {big}", flush=True)
        bench_1m(big, rng, centres, nq, rows, args.nprobe)
        print(f"stream {hours} h", flush=True)
        st = bench_stream(hours, tmp, capacity=capacity, tokens=32)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cpu = platform.processor() or platform.machine()
    lines = [
        "# Clip memory benchmark", "",
        f"Machine: {os.cpu_count()}-core CPU ({cpu}), shared; FAISS {faiss.__version__}, one "
        f"search thread; load average at the end {os.getloadavg()[0]:.1f} (other jobs shared "
        f"the cores, so latencies are pessimistic). Date: {_dt.date.today().isoformat()}. "
        "Command: `python benchmarks/memory.py"
        + (" --quick" if args.quick else "") + "`.", "",
        f"## Search (dim {DIM}, synthetic unit vectors with cluster structure, k = {K})", "",
        "| clips | index | p50 ms | p99 ms | recall@10 vs exact | build |", "|---|---|---|---|---|---|"]
    for n, kind, p50, p99, rec, build in rows:
        lines.append(f"| {n} | {kind} | {p50:.2f} | {p99:.2f} | "
                     f"{'-' if rec is None else f'{rec:.3f}'} | {build} |")
    lines += ["", "## Store open (read-only)", "",
              "| clips | open s | first query s | disk MiB |", "|---|---|---|---|"]
    for n, to, tf, mib in open_rows:
        lines.append(f"| {n} | {to:.3f} | {tf:.3f} | {mib:.0f} |")
    m = st["manifest"]
    lines += ["", f"## Bounded stream: {hours:g} h, one clip per 4 s ({st['n_clips']:,} clips), "
              f"32 tokens/clip (float16), capacity {capacity:,} clips, commit every 60 s of stream", "",
              "| stream hour | RSS MiB | of which anonymous | of which mapped store files | "
              "store MiB | clips | merges so far |", "|---|---|---|---|---|---|---|"]
    for h, (rss, anon, filemap), mib, n, merges in st["samples"]:
        lines.append(f"| {h} | {rss:.0f} | {anon:.0f} | {filemap:.0f} | {mib:.1f} | {n} | "
                     f"{merges} |")
    rss = [s[1][1] for s in st["samples"]]
    tot = [s[1][0] for s in st["samples"]][len(rss) // 4:] or [0.0]
    half = rss[len(rss) // 4:] or rss
    disk = [s[2] for s in st["samples"]]
    lines += ["",
              f"Anonymous RSS (heap and indexes) after the bound is reached (hours "
              f"{len(rss) // 4 + 1}-{len(rss)}): {min(half):.0f}-{max(half):.0f} MiB "
              f"({(max(half) - np.mean(half)) / np.mean(half) * 100:+.1f} % / "
              f"{(min(half) - np.mean(half)) / np.mean(half) * 100:+.1f} % around the mean); "
              f"total RSS {min(tot):.0f}-{max(tot):.0f} MiB, the difference being pages of the "
              "memory-mapped store files (bounded by the store size, reclaimable). "
              f"Disk: {disk[0]:.1f} MiB per stream-hour before the bound is reached (hour 1); "
              f"with the bound the store stays at {min(disk[len(disk) // 4:]):.0f}-"
              f"{max(disk[len(disk) // 4:]):.0f} MiB whatever the length of the stream "
              f"({disk[-1]:.1f} MiB after {hours:g} h, i.e. {disk[-1] / hours:.1f} MiB per "
              "stream-hour over the day; peaks are commits that compact segments, when old and "
              "new files briefly coexist).",
              f"Final: {m['counts']['clips']} clips, levels {m['counts']['levels']}, "
              f"{m['counts']['merges']} merges, {m['counts']['consolidated']} stored clips "
              f"consolidated; the clips cover {st['covered'][0]:.0f}-{st['covered'][1]:.0f} s "
              f"with {st['gaps']} gaps. Wall time {st['elapsed']:.0f} s.",
              ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
