"""Serving under load: `genlab serve` on loopback, many concurrent clients mixing streamed text, scoring and images.

    .venv/bin/python benchmarks/serve.py [--clients 50] [--seconds 60] [--workdir runs/bench-serve]

Trains three small runs on built-in data (a character Transformer and a 5-gram on `names`, a diffusion model on
`mnist5k`; a few seconds each: the weights' quality does not matter here, their size and code path do), starts
`genlab serve` as its own process, and measures:
- time to first token of a streamed text on an idle server (median of 20), and whole-request latency per kind;
- the load test: `--clients` clients, each sending its next request as soon as the last one ends, for
  `--seconds`: 60% text streams (64 new tokens), 25% scoring, 15% images (4 images, 10 steps); requests/s,
  p50/p95/p99 latency per kind, status codes, 5xx and dropped streams (a stream that ends without its
  `event: done`), and the server's resident memory before and after (models loaded in both).
Client and server share this machine's cores: the figures are the pair's, not the server's alone.
Prints a table and writes benchmarks/results/serve.json.
"""

import argparse
import asyncio
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

import genlab
from genlab.checkpoint import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serve.json"

RUNS = {  # name -> (model, options)
    "gpt": ("transformer", {"data": "names", "tokenizer": "char", "seq_len": 32, "n_layer": 4, "n_head": 4,
                            "n_embd": 128, "max_seconds": 20}),
    "5gram": ("ngram", {"data": "names", "order": 5, "tokenizer": "char"}),
    "diffusion": ("diffusion", {"data": "mnist5k", "conditional": True, "max_seconds": 20, "batch_size": 32}),
}
MIX = [("stream", 0.60), ("score", 0.25), ("image", 0.15)]
SENTENCES = "anna\nemma\nolivia\nzebulon\nmaximilian"


def make_runs(workdir: Path) -> Path:
    root = workdir / "runs"
    for name, (model, options) in RUNS.items():
        if not (root / name / "config.json").is_file():
            extra = {} if model == "ngram" else {"max_steps": 10**9, "eval_interval": 10**9}
            genlab.train(model, root / name, options | extra, overwrite=True)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    qs = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else [values[0]] * 99
    return {"p50": round(qs[49], 4), "p95": round(qs[94], 4), "p99": round(qs[98], 4), "n": len(values)}


async def one_request(client: httpx.AsyncClient, kind: str, rng: random.Random) -> dict:
    """Send one request of `kind`; returns its kind, status, seconds, and for streams the time to the first piece
    and whether the stream ended properly."""
    start = time.perf_counter()
    result: dict = {"kind": kind}
    if kind == "stream":
        body = {"model": "gpt", "prompt": rng.choice(["a", "em", "ol", ""]), "max_new_tokens": 64,
                "seed": rng.randrange(10**6), "stream": True}
        async with client.stream("POST", "/v1/text/generate", json=body) as r:
            result["status"] = r.status_code
            done = False
            async for line in r.aiter_lines():
                if line.startswith("data: ") and "first" not in result:
                    result["first"] = time.perf_counter() - start
                if line == "event: done":
                    done = True
            result["complete"] = done or r.status_code != 200
    elif kind == "score":
        r = await client.post("/v1/text/score", json={"model": rng.choice(["gpt", "5gram"]), "text": SENTENCES})
        result["status"] = r.status_code
    else:
        r = await client.post("/v1/images/generate", json={"model": "diffusion", "num_images": 4, "steps": 10,
                                                           "seed": rng.randrange(10**6)})
        result["status"] = r.status_code
        result["complete"] = r.status_code != 200 or r.content[:8] == b"\x89PNG\r\n\x1a\n"
    result["seconds"] = time.perf_counter() - start
    return result


async def client_loop(base: str, index: int, stop_at: float, results: list[dict]) -> None:
    rng = random.Random(index)
    kinds, weights = zip(*MIX, strict=True)
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        while time.perf_counter() < stop_at:
            kind = rng.choices(kinds, weights)[0]
            try:
                results.append(await one_request(client, kind, rng))
            except httpx.HTTPError as e:  # a dropped connection counts against the server
                results.append({"kind": kind, "status": 0, "error": type(e).__name__, "complete": False,
                                "seconds": 0.0})


async def load_test(base: str, clients: int, seconds: float) -> tuple[list[dict], float]:
    results: list[dict] = []
    start = time.perf_counter()
    await asyncio.gather(*(client_loop(base, i, start + seconds, results) for i in range(clients)))
    return results, time.perf_counter() - start


async def idle_first_token(base: str, n: int = 20) -> list[float]:
    rng = random.Random(0)
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        return [(await one_request(client, "stream", rng))["first"] for _ in range(n)]


def summarize(results: list[dict], wall: float) -> dict:
    by_kind = {}
    for kind, _ in MIX:
        rows = [r for r in results if r["kind"] == kind]
        ok = [r["seconds"] for r in rows if r["status"] == 200]
        entry = {"requests": len(rows), "ok": len(ok), "latency_s": percentiles(ok)}
        if kind == "stream":
            entry["first_piece_s"] = percentiles([r["first"] for r in rows if "first" in r])
        by_kind[kind] = entry
    statuses: dict[str, int] = {}
    for r in results:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    return {
        "requests": len(results),
        "seconds": round(wall, 1),
        "requests_per_s": round(len(results) / wall, 2),
        "statuses": statuses,
        "server_errors_5xx": sum(1 for r in results if r["status"] >= 500),
        "connection_errors": sum(1 for r in results if r["status"] == 0),
        "dropped_streams": sum(1 for r in results if r["kind"] == "stream" and not r.get("complete", True)),
        "by_kind": by_kind,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench-serve")
    args = parser.parse_args()
    runs = make_runs(args.workdir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "genlab", "serve", str(runs), "--port", str(port),
                               "--log-level", "warning"], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for _ in range(600):
            try:
                if httpx.get(base + "/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        rng = random.Random(1)

        async def warm() -> None:  # load every model once, so that memory before/after compares like with like
            async with httpx.AsyncClient(base_url=base, timeout=120) as client:
                for kind in ("stream", "score", "image"):
                    await one_request(client, kind, rng)
                await client.post("/v1/text/score", json={"model": "5gram", "text": SENTENCES})

        asyncio.run(warm())
        first = asyncio.run(idle_first_token(base))
        rss_before = rss_mb(server.pid)
        results, wall = asyncio.run(load_test(base, args.clients, args.seconds))
        rss_after = rss_mb(server.pid)
        health = httpx.get(base + "/v1/health").json()
    finally:
        server.terminate()
        server.wait(30)
    report = {
        "command": f"benchmarks/serve.py --clients {args.clients} --seconds {args.seconds:g}",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "clients": args.clients,
        "idle_first_piece_s": percentiles(first),
        "load": summarize(results, wall),
        "server_rss_mb": {"before": round(rss_before), "after": round(rss_after),
                          "growth": round(rss_after - rss_before)},
        "busy_after": health["busy"],
    }
    atomic_write_json(RESULTS, report)
    load = report["load"]
    print(f"idle server, time to first piece of a stream: median {report['idle_first_piece_s']['p50'] * 1000:.0f} ms")
    print(f"{args.clients} clients for {load['seconds']} s: {load['requests']} requests, {load['requests_per_s']}/s; "
          f"statuses {load['statuses']}; 5xx {load['server_errors_5xx']}, dropped streams {load['dropped_streams']}, "
          f"connection errors {load['connection_errors']}")
    print("\n| kind | requests | ok | p50 s | p95 s | p99 s |\n|---|---|---|---|---|---|")
    for kind, entry in load["by_kind"].items():
        lat = entry["latency_s"]
        print(f"| {kind} | {entry['requests']} | {entry['ok']} | {lat.get('p50', '—')} | {lat.get('p95', '—')} | "
              f"{lat.get('p99', '—')} |")
    stream_first = load["by_kind"]["stream"]["first_piece_s"]
    if stream_first:
        print(f"\nunder load, time to first piece: p50 {stream_first['p50']} s, p95 {stream_first['p95']} s")
    rss = report["server_rss_mb"]
    print(f"server memory: {rss['before']} MB before, {rss['after']} MB after ({rss['growth']:+d} MB); "
          f"requests still holding a slot afterwards: {report['busy_after']}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
