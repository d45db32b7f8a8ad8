"""Benchmark: genlab's modified Kneser-Ney n-gram LM on Penn Treebank vs KenLM (and NLTK).

    .venv/bin/python benchmarks/ngram_ptb.py

Corpus: PTB with <unk> renamed _unk_ (as ../shared/data/kenlm-ref/README.md), orders 3 and 5.
* estimation: wall time and peak memory of `fit + save` in a child process (max RSS of that child);
  `lmplz -o N -S 1G` side by side only when an lmplz binary is on PATH or in $LMPLZ;
* scoring: tokens/s on the test set (words + sentences, strings in, sentence log10 probabilities out)
  for genlab and `kenlm.Model.score`, measured in this run; test perplexity of both;
* NLTK `KneserNeyInterpolated` order 3 (its own KN variant, discount 0.1): fit on the same train set,
  perplexity timed on the first test sentences (as many as it scores in NLTK_SECONDS), extrapolated
  linearly to the full set.

Prints a markdown table and writes benchmarks/results/ngram_ptb.json.
"""

from __future__ import annotations

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
NLTK_SECONDS = 60.0
ORDERS = (3, 5)

FIT_CHILD = """
import sys, time
from pathlib import Path
from genlab.models.ngram import NgramConfig, NgramLM
train, order, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
start = time.perf_counter()
with open(train) as f:
    model = NgramLM.fit((line.split() for line in f), NgramConfig(order=order, smoothing="mkn"))
model.save(out)
print(time.perf_counter() - start)
"""


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
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout)


def make_corpus(tmp: Path) -> dict[str, Path]:
    paths = {}
    for split in ("train", "valid", "test"):
        src = SHARED / "ptb" / f"ptb.{split}.txt"
        if not src.is_file():
            sys.exit(f"{src} not found: this benchmark needs ../shared/data/ptb")
        paths[split] = tmp / f"ptb_unk.{split}.txt"
        paths[split].write_text(src.read_text().replace("<unk>", "_unk_"))
    return paths


def bench_order(order: int, corpus: dict[str, Path], tmp: Path, lmplz: str | None) -> dict:
    import kenlm
    import numpy as np

    from genlab.models.ngram import NgramLM

    row: dict = {"order": order}
    # Estimation, in a child process.
    run_dir = tmp / f"genlab.o{order}"
    fit = measured([sys.executable, "-c", FIT_CHILD, str(corpus["train"]), str(order), str(run_dir)])
    row["genlab_fit_save_s"] = float(fit["stdout"].strip())
    row["genlab_fit_process_wall_s"] = fit["wall_s"]
    row["genlab_peak_rss_mib"] = fit["peak_rss_mib"]
    if lmplz:
        arpa = tmp / f"lmplz.o{order}.arpa"
        lm = measured([lmplz, "-o", str(order), "-S", "1G"], stdin=corpus["train"], stdout=arpa)
        row["lmplz_wall_s"] = lm["wall_s"]
        row["lmplz_peak_rss_mib"] = lm["peak_rss_mib"]

    # Scoring the test set: strings in, one log10 probability per sentence out.
    lines = [line for line in corpus["test"].read_text().split("\n") if line.strip()]
    tokens = sum(len(line.split()) + 1 for line in lines)
    model = NgramLM.load(run_dir)
    reference = SHARED / "kenlm-ref" / f"ptb.o{order}.arpa.gz"
    if not reference.is_file():
        reference = tmp / f"genlab.o{order}.arpa.gz"
        model.to_arpa(reference)
    km = kenlm.Model(str(reference))
    best_genlab, best_kenlm = float("inf"), float("inf")
    for _ in range(3):  # best of 3: the machine is shared
        start = time.perf_counter()
        ours = model.score_sentences(lines)
        best_genlab = min(best_genlab, time.perf_counter() - start)
        start = time.perf_counter()
        theirs = np.array([km.score(line, bos=True, eos=True) for line in lines])
        best_kenlm = min(best_kenlm, time.perf_counter() - start)
    row["test_tokens"] = tokens
    row["genlab_score_tokens_per_s"] = tokens / best_genlab
    row["kenlm_score_tokens_per_s"] = tokens / best_kenlm
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


def main() -> None:
    sys.path.insert(0, str(REPO / "src"))
    lmplz = os.environ.get("LMPLZ") or shutil.which("lmplz")
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                     "python": platform.python_version(), "lmplz": lmplz, "orders": []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        corpus = make_corpus(tmp)
        for order in ORDERS:
            results["orders"].append(bench_order(order, corpus, tmp, lmplz))
            print(f"order {order} done", file=sys.stderr)
        results["nltk"] = bench_nltk(corpus)
    results["load_average_1min_at_end"] = os.getloadavg()[0]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


def table(results: dict) -> str:
    lm = results["lmplz"] is not None
    head = "| order | genlab fit+save (s) | genlab peak RSS (MiB) |"
    head += " lmplz -S 1G (s) | lmplz peak RSS (MiB) |" if lm else ""
    head += " genlab score (tok/s) | kenlm.Model score (tok/s) | genlab test ppl | KenLM test ppl |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results["orders"]:
        cells = [str(r["order"]), f"{r['genlab_fit_save_s']:.2f}", f"{r['genlab_peak_rss_mib']:.0f}"]
        if lm:
            cells += [f"{r['lmplz_wall_s']:.2f}", f"{r['lmplz_peak_rss_mib']:.0f}"]
        cells += [f"{r['genlab_score_tokens_per_s']:,.0f}", f"{r['kenlm_score_tokens_per_s']:,.0f}",
                  f"{r['genlab_test_ppl']:.4f}", f"{r['kenlm_test_ppl']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    n = results["nltk"]
    lines += [
        "",
        f"NLTK KneserNeyInterpolated (order 3, discount 0.1): fit {n['nltk_fit_s']:.1f} s; perplexity on the first "
        f"{n['nltk_subset_sentences']} test sentences ({n['nltk_subset_tokens']} tokens) "
        f"{n['nltk_subset_ppl_s']:.1f} s "
        f"-> full test set extrapolated {n['nltk_full_test_ppl_s_extrapolated']:.0f} s. "
        f"Subset perplexity: NLTK {n['nltk_subset_ppl']:.2f}, genlab mkn {n['genlab_subset_ppl']:.2f}.",
        f"genlab mkn order 3: fit {n['genlab_fit_s']:.2f} s + full test perplexity {n['genlab_full_test_ppl_s']:.3f} s "
        f"-> end-to-end {n['end_to_end_speedup']:.0f}x faster than NLTK.",
        "",
        f"Machine: {results['machine']}; 1-min load average at the end {results['load_average_1min_at_end']:.1f} "
        "(shared machine: timings are noisy).",
    ]
    if not lm:
        lines.append("lmplz not found on PATH or $LMPLZ: no lmplz estimation column.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
