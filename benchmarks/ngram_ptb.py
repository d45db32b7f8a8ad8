"""Benchmark: genlab's modified Kneser-Ney n-gram LM on Penn Treebank vs KenLM (and NLTK).

    .venv/bin/python benchmarks/ngram_ptb.py [--growth [COPIES ...]] [--no-nltk] [--no-build]

Corpus: PTB with <unk> renamed _unk_ (as ../shared/data/kenlm-ref/README.md), orders 3 and 5.
* estimation: whole-process wall time and peak memory of `genlab train ngram` (start-up, reading, counting,
  smoothing and writing the run: what a user waits for) beside `lmplz -o N -S 1G` in the same run. lmplz is
  taken from $LMPLZ or PATH, else built once from KenLM's PyPI source distribution into
  ~/.cache/genlab/kenlm-0.3.0 (needs cmake, g++ and Debian's libboost-{program-options,system,thread,test}-dev
  zlib1g-dev; `--no-build` skips it);
* scoring: tokens/s on the test set (words + sentences, strings in, sentence log10 probabilities out)
  for genlab (its compiled scorer, genlab[fast], and its numpy path) and `kenlm.Model.score`, best of 5, the
  three alternating; the load times (kenlm.Model: reading the ARPA file into its hash tables; genlab: the run's
  safetensors, then the scorer's tables on the first call); test perplexity of both;
* NLTK `KneserNeyInterpolated` order 3 (its own KN variant, discount 0.1): fit on the same train set,
  perplexity timed on the first test sentences (as many as it scores in NLTK_SECONDS), extrapolated
  linearly to the full set;
* growth (`--growth`, default 1 4 16 64 copies): order-5 estimation, whole process, on PTB's training text
  repeated, each copy's words renamed through its own seeded permutation of the vocabulary, genlab beside lmplz
  (best of 3 below 16 copies, alternating; larger corpora once);
  a log-log plot in benchmarks/results/ngram_growth.png.

Prints markdown tables and writes benchmarks/results/ngram_ptb.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results" / "ngram_ptb.json"
GROWTH_PLOT = REPO / "benchmarks" / "results" / "ngram_growth.png"
GROWTH_REPEATS, GROWTH_REPEATED_BELOW = 3, 16  # growth: best of 3 below 16 copies
NLTK_SECONDS = 60.0
REPEATS = 3
ORDERS = (3, 5)

KENLM_VERSION = "0.3.0"
BOOST_PACKAGES = ("cmake", "g++", "libboost-program-options-dev", "libboost-system-dev", "libboost-thread-dev",
                  "libboost-test-dev", "zlib1g-dev")


def build_lmplz(cache: Path = Path.home() / ".cache" / "genlab" / f"kenlm-{KENLM_VERSION}") -> Path:
    """KenLM's lmplz, built once from the kenlm source distribution on PyPI (its CMake build has lm/builder)."""
    binary = cache / "build" / "bin" / "lmplz"
    if binary.is_file():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    print(f"building lmplz into {cache} (once; a few minutes)", file=sys.stderr)
    if shutil.which("cmake") is None:
        sys.exit("lmplz build: cmake not found; install: apt-get install " + " ".join(BOOST_PACKAGES))
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "kenlm",
                    f"kenlm=={KENLM_VERSION}", "-d", str(cache)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["tar", "xzf", f"kenlm-{KENLM_VERSION}.tar.gz"], cwd=cache, check=True)
    build = cache / "build"
    build.mkdir(exist_ok=True)
    source = cache / f"kenlm-{KENLM_VERSION}"
    try:
        subprocess.run(["cmake", str(source), "-DCMAKE_BUILD_TYPE=Release"], cwd=build, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["make", f"-j{os.cpu_count() or 1}", "lmplz"], cwd=build, check=True, stdout=subprocess.DEVNULL)
    except subprocess.CalledProcessError as error:
        sys.exit(f"lmplz build failed ({error}); it needs: apt-get install " + " ".join(BOOST_PACKAGES))
    return binary


def measured(cmd: list[str], stdin: Path | None = None, stdout: Path | None = None) -> dict[str, float]:
    """Run `cmd` in a child of a fresh Python process, so RUSAGE_CHILDREN's max RSS is this command's alone."""
    wrapper = (
        "import json, resource, subprocess, sys, time\n"
        "cmd, stdin, stdout = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]\n"
        "start = time.perf_counter()\n"
        "fin = open(stdin) if stdin else None\n"
        "fout = open(stdout, 'w') if stdout else subprocess.PIPE\n"
        "p = subprocess.run(cmd, stdin=fin, stdout=fout, stderr=subprocess.PIPE, text=True)\n"
        "wall = time.perf_counter() - start\n"
        "if p.returncode: sys.exit(p.stderr[-2000:])\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps({'wall_s': wall, 'peak_rss_mib': rss, 'stdout': p.stdout if not stdout else ''}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    out = subprocess.run([sys.executable, "-c", wrapper, json.dumps(cmd), str(stdin or ""), str(stdout or "")],
                         capture_output=True, text=True, env=env)
    if out.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


def make_corpus(tmp: Path) -> dict[str, Path]:
    paths = {}
    for split in ("train", "valid", "test"):
        src = SHARED / "ptb" / f"ptb.{split}.txt"
        if not src.is_file():
            sys.exit(f"{src} not found: this benchmark needs ../shared/data/ptb")
        paths[split] = tmp / f"ptb.{split}.txt"  # the names `genlab train --data DIR` looks for
        paths[split].write_text(src.read_text().replace("<unk>", "_unk_"))
    return paths


def bench_order(order: int, corpus: dict[str, Path], tmp: Path, lmplz: str | None) -> dict:
    import kenlm
    import numpy as np

    from genlab.models.ngram import NgramLM

    row: dict = {"order": order}
    # Estimation as a user waits for it: whole processes, start-up, reading and writing included; best of
    # REPEATS, alternating the two programs so that a busy spell on the shared machine hits both.
    run_dir = tmp / f"genlab.o{order}"
    genlab_cmd = [sys.executable, "-m", "genlab", "train", "ngram", "--order", str(order), "--smoothing", "mkn",
                  "--data", str(corpus["train"].parent), "--out", str(run_dir), "--overwrite"]
    genlab_runs, lmplz_runs = [], []
    for _ in range(REPEATS):
        genlab_runs.append(measured(genlab_cmd))
        if lmplz:
            lmplz_runs.append(measured([lmplz, "-o", str(order), "-S", "1G"], stdin=corpus["train"],
                                       stdout=tmp / f"lmplz.o{order}.arpa"))
    row["genlab_process_wall_s"] = min(r["wall_s"] for r in genlab_runs)
    row["genlab_peak_rss_mib"] = max(r["peak_rss_mib"] for r in genlab_runs)
    if lmplz:
        row["lmplz_wall_s"] = min(r["wall_s"] for r in lmplz_runs)
        row["lmplz_peak_rss_mib"] = max(r["peak_rss_mib"] for r in lmplz_runs)
        row["time_ratio"] = row["genlab_process_wall_s"] / row["lmplz_wall_s"]
        row["memory_ratio"] = row["genlab_peak_rss_mib"] / row["lmplz_peak_rss_mib"]

    # Scoring the test set: strings in, one log10 probability per sentence out.
    lines = [line for line in corpus["test"].read_text().split("\n") if line.strip()]
    tokens = sum(len(line.split()) + 1 for line in lines)
    start = time.perf_counter()
    model = NgramLM.load(run_dir)
    row["genlab_load_s"] = time.perf_counter() - start
    reference = SHARED / "kenlm-ref" / f"ptb.o{order}.arpa.gz"
    if not reference.is_file():
        reference = tmp / f"genlab.o{order}.arpa.gz"
        model.to_arpa(reference)
    start = time.perf_counter()
    km = kenlm.Model(str(reference))
    row["kenlm_load_s"] = time.perf_counter() - start  # reading the ARPA file and building its hash tables
    # genlab's compiled scorer (genlab[fast]) builds its hash tables on its first call; numpy's path needs none.
    model.scorer = "compiled"
    start = time.perf_counter()
    ours = model.score_sentences(lines)
    row["genlab_first_score_s"] = time.perf_counter() - start
    row["genlab_scorer"] = "compiled" if model._scorer is not None else "numpy (numba not installed)"
    best = {"genlab": float("inf"), "numpy": float("inf"), "kenlm": float("inf")}
    for _ in range(5):  # best of 5, the three alternating: the machine is shared
        start = time.perf_counter()
        ours = model.score_sentences(lines)
        best["genlab"] = min(best["genlab"], time.perf_counter() - start)
        model.scorer = "numpy"
        start = time.perf_counter()
        numpy_scores = model.score_sentences(lines)
        best["numpy"] = min(best["numpy"], time.perf_counter() - start)
        model.scorer = "compiled"
        start = time.perf_counter()
        theirs = np.array([km.score(line, bos=True, eos=True) for line in lines])
        best["kenlm"] = min(best["kenlm"], time.perf_counter() - start)
    row["genlab_numpy_score_tokens_per_s"] = tokens / best["numpy"]
    row["max_abs_numpy_compiled_diff"] = float(np.abs(ours - numpy_scores).max())
    row["test_tokens"] = tokens
    row["genlab_score_tokens_per_s"] = tokens / best["genlab"]
    row["kenlm_score_tokens_per_s"] = tokens / best["kenlm"]
    row["genlab_test_ppl"] = model.perplexity(lines)["perplexity"]
    row["kenlm_test_ppl"] = float(10 ** (-theirs.sum() / tokens))
    row["max_abs_sentence_diff"] = float(np.abs(ours - theirs).max())
    row["kenlm_model"] = str(reference)
    return row


def bench_nltk(corpus: dict[str, Path]) -> dict:
    from nltk.lm import KneserNeyInterpolated
    from nltk.lm.preprocessing import padded_everygram_pipeline
    from nltk.util import ngrams, pad_sequence

    from genlab.models.ngram import NgramConfig, NgramLM

    train = [line.split() for line in corpus["train"].read_text().split("\n") if line.strip()]
    test = [line.split() for line in corpus["test"].read_text().split("\n") if line.strip()]
    start = time.perf_counter()
    grams, vocab = padded_everygram_pipeline(3, train)
    lm = KneserNeyInterpolated(3)
    lm.fit(grams, vocab)
    nltk_fit = time.perf_counter() - start
    # NLTK's KN scans every stored context for each continuation count (about a second per token here), so
    # score whole test sentences in order until NLTK_SECONDS have passed and extrapolate per token.
    # NLTK pads with two <s> and two </s>; score only real words and the first </s>, as KenLM.
    subset, log2_sum, n_scored = [], 0.0, 0
    start = time.perf_counter()
    for sentence in test:
        padded = list(pad_sequence(sentence, 3, pad_left=True, pad_right=True, left_pad_symbol="<s>",
                                   right_pad_symbol="</s>"))
        for gram in ngrams(padded, 3):
            if gram[1] != "</s>":
                log2_sum += lm.logscore(gram[-1], gram[:-1])
                n_scored += 1
        subset.append(sentence)
        if time.perf_counter() - start > NLTK_SECONDS:
            break
    nltk_subset_s = time.perf_counter() - start
    nltk_ppl = 2.0 ** (-log2_sum / n_scored)
    subset_tokens = sum(len(s) + 1 for s in subset)
    assert subset_tokens == n_scored
    test_tokens = sum(len(s) + 1 for s in test)
    nltk_full_est = nltk_subset_s * test_tokens / subset_tokens

    start = time.perf_counter()
    model = NgramLM.fit(train, NgramConfig(order=3, smoothing="mkn"))
    genlab_fit = time.perf_counter() - start
    start = time.perf_counter()
    model.perplexity(test)
    genlab_full = time.perf_counter() - start
    return {
        "nltk_order": 3, "nltk_subset_sentences": len(subset), "nltk_subset_tokens": subset_tokens,
        "nltk_fit_s": nltk_fit, "nltk_subset_ppl_s": nltk_subset_s, "nltk_full_test_ppl_s_extrapolated": nltk_full_est,
        "nltk_subset_ppl": nltk_ppl, "genlab_subset_ppl": model.perplexity(subset)["perplexity"],
        "genlab_fit_s": genlab_fit, "genlab_full_test_ppl_s": genlab_full,
        "end_to_end_speedup": (nltk_fit + nltk_full_est) / (genlab_fit + genlab_full),
    }


def grown_corpus(train: Path, copies: int, out: Path) -> Path:
    """`copies` copies of the training text, copy k with every word renamed through its own seeded permutation of
    the vocabulary (copy 0 unchanged): the vocabulary stays PTB's, distinct n-grams grow with the corpus (the
    hard case for memory)."""
    import numpy as np

    lines = train.read_text().split("\n")
    vocab = sorted({w for line in lines for w in line.split()})
    with out.open("w") as f:
        for k in range(copies):
            rename = dict(zip(vocab, np.array(vocab)[np.random.default_rng(k).permutation(len(vocab))].tolist(),
                              strict=True)) if k else {w: w for w in vocab}
            f.writelines(" ".join(map(rename.__getitem__, line.split())) + "\n" for line in lines if line.strip())
    return out


def bench_growth(sizes: list[int], corpus: dict[str, Path], tmp: Path, lmplz: str | None) -> list[dict]:
    """Order-5 estimation time and peak memory at each multiple of PTB's training text, genlab beside lmplz."""
    from genlab.models.ngram import NgramLM

    rows = []
    for size in sizes:
        data = tmp / f"grown{size}"
        data.mkdir()
        train = grown_corpus(corpus["train"], size, data / "ptb.train.txt")
        row: dict = {"copies": size, "tokens": sum(len(line.split()) + 1 for line in train.open())}
        # Best of GROWTH_REPEATS (the two alternating) below GROWTH_REPEATED_BELOW copies, where a run takes seconds
        # and the machine's noise is a large part of it; larger corpora once.
        repeats = GROWTH_REPEATS if size < GROWTH_REPEATED_BELOW else 1
        genlab_runs, lmplz_runs = [], []
        for _ in range(repeats):
            out = tmp / f"grown{size}.run"
            genlab_runs.append(measured([sys.executable, "-m", "genlab", "train", "ngram", "--order", "5",
                                         "--data", str(data), "--out", str(out)]))
            row["ngrams"] = sum(NgramLM.load(out).counts_per_order())
            shutil.rmtree(out)
            if lmplz:
                arpa = tmp / "grown.arpa"
                # Renamed copies leave no unigram with continuation count 1, so lmplz needs its fallback discounts
                # for unigrams (genlab falls back by itself, with a warning); the work is the same.
                lmplz_runs.append(measured([lmplz, "-o", "5", "-S", "1G", "-T", str(tmp), "--discount_fallback"],
                                           stdin=train, stdout=arpa))
                arpa.unlink()
        row |= {"runs": repeats, "genlab_wall_s": min(r["wall_s"] for r in genlab_runs),
                "genlab_peak_rss_mib": max(r["peak_rss_mib"] for r in genlab_runs)}
        if lmplz_runs:
            row |= {"lmplz_wall_s": min(r["wall_s"] for r in lmplz_runs),
                    "lmplz_peak_rss_mib": max(r["peak_rss_mib"] for r in lmplz_runs)}
        shutil.rmtree(data)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def growth_plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = [r["tokens"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "wall_s", "wall time (s)"), (axes[1], "peak_rss_mib", "peak memory (MiB)")):
        ax.loglog(tokens, [r[f"genlab_{key}"] for r in rows], "o-", label="genlab train ngram --order 5")
        if "lmplz_wall_s" in rows[0]:
            ax.loglog(tokens, [r[f"lmplz_{key}"] for r in rows], "s-", label="lmplz -o 5 -S 1G")
        if key == "wall_s":  # a line of slope 1 through genlab's first point: linear growth
            ax.loglog(tokens, [rows[0]["genlab_wall_s"] * t / tokens[0] for t in tokens], ":", color="gray",
                      label="linear")
        ax.set_xlabel("training tokens (PTB copies, words renamed)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-build", action="store_true", help="do not build lmplz when it is not found")
    parser.add_argument("--no-nltk", action="store_true", help="skip the NLTK comparison (about 90 s)")
    parser.add_argument("--growth", type=int, nargs="*", metavar="COPIES",
                        help="also time order-5 estimation on this many renamed copies of PTB (default 1 4 16 64)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    lmplz = os.environ.get("LMPLZ") or shutil.which("lmplz")
    if lmplz is None and not args.no_build:
        lmplz = str(build_lmplz())
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                     "python": platform.python_version(), "lmplz": lmplz, "orders": []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        corpus = make_corpus(tmp)
        for order in ORDERS:
            results["orders"].append(bench_order(order, corpus, tmp, lmplz))
            print(f"order {order} done", file=sys.stderr)
        if not args.no_nltk:
            try:
                results["nltk"] = bench_nltk(corpus)
            except ImportError:
                print("nltk is not installed (pip install nltk): no NLTK comparison", file=sys.stderr)
        if args.growth is not None:
            results["growth"] = bench_growth(args.growth or [1, 4, 16, 64], corpus, tmp, lmplz)
            growth_plot(results["growth"], GROWTH_PLOT)
        elif RESULTS.is_file():  # a run without --growth keeps the last growth figures, marked as earlier
            earlier = json.loads(RESULTS.read_text())
            if "growth" in earlier:
                results["growth"] = earlier["growth"]
                results["growth_from_an_earlier_run"] = True
    results["load_average_1min_at_end"] = os.getloadavg()[0]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


def table(results: dict) -> str:
    lm = results["lmplz"] is not None
    head = "| order | genlab train (s) | lmplz -S 1G (s) | ratio | genlab peak (MiB) | lmplz peak (MiB) | ratio |" \
        if lm else "| order | genlab train (s) | genlab peak (MiB) |"
    head += (" genlab score (tok/s) | kenlm.Model score (tok/s) | ratio | genlab numpy path (tok/s) |"
             " genlab load + tables (s) | kenlm.Model load (s) | genlab test ppl | KenLM test ppl |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results["orders"]:
        if lm:
            cells = [str(r["order"]), f"{r['genlab_process_wall_s']:.2f}", f"{r['lmplz_wall_s']:.2f}",
                     f"{r['time_ratio']:.2f}×", f"{r['genlab_peak_rss_mib']:.0f}", f"{r['lmplz_peak_rss_mib']:.0f}",
                     f"{r['memory_ratio']:.2f}×"]
        else:
            cells = [str(r["order"]), f"{r['genlab_process_wall_s']:.2f}", f"{r['genlab_peak_rss_mib']:.0f}"]
        tables = r["genlab_first_score_s"] - r["test_tokens"] / r["genlab_score_tokens_per_s"]
        cells += [f"{r['genlab_score_tokens_per_s']:,.0f}", f"{r['kenlm_score_tokens_per_s']:,.0f}",
                  f"{r['genlab_score_tokens_per_s'] / r['kenlm_score_tokens_per_s']:.2f}×",
                  f"{r['genlab_numpy_score_tokens_per_s']:,.0f}", f"{r['genlab_load_s']:.2f} + {tables:.2f}",
                  f"{r['kenlm_load_s']:.2f}", f"{r['genlab_test_ppl']:.4f}", f"{r['kenlm_test_ppl']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if "growth" in results:
        lines += ["", "| PTB copies | tokens | n-grams | genlab (s) | genlab peak (MiB) |"
                  + (" lmplz (s) | lmplz peak (MiB) |" if lm else ""),
                  "|---|---|---|---|---|" + ("---|---|" if lm else "")]
        for g in results["growth"]:
            cells = [str(g["copies"]), f"{g['tokens']:,}", f"{g['ngrams']:,}", f"{g['genlab_wall_s']:.1f}",
                     f"{g['genlab_peak_rss_mib']:,.0f}"]
            if lm:
                cells += [f"{g['lmplz_wall_s']:.1f}", f"{g['lmplz_peak_rss_mib']:,.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
    if "nltk" in results:
        n = results["nltk"]
        lines += [
            "",
            f"NLTK KneserNeyInterpolated (order 3, discount 0.1): fit {n['nltk_fit_s']:.1f} s; perplexity on the "
            f"first {n['nltk_subset_sentences']} test sentences ({n['nltk_subset_tokens']} tokens) "
            f"{n['nltk_subset_ppl_s']:.1f} s -> full test set extrapolated {n['nltk_full_test_ppl_s_extrapolated']:.0f}"
            f" s. Subset perplexity: NLTK {n['nltk_subset_ppl']:.2f}, genlab mkn {n['genlab_subset_ppl']:.2f}.",
            f"genlab mkn order 3: fit {n['genlab_fit_s']:.2f} s + full test perplexity "
            f"{n['genlab_full_test_ppl_s']:.3f} s -> end-to-end {n['end_to_end_speedup']:.0f}x faster than NLTK.",
        ]
    lines += [
        "",
        f"Machine: {results['machine']}; 1-min load average at the end {results['load_average_1min_at_end']:.1f} "
        "(shared machine: timings are noisy).",
    ]
    if not lm:
        lines.append("lmplz not found on PATH or $LMPLZ: no lmplz estimation column.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
