"""Hyper-parameter search side by side: the default config, random search, and TPE with pruning (ASHA).

    .venv/bin/python benchmarks/tune.py [--budget 600] [--trial-seconds 60] [--only shakespeare vae]
                                        [--arms default random tpe+pruning] [--seed 0]

Each arm gets the same wall-clock budget for its trials, and every trial (the default config's one included)
the same training time, `--trial-seconds`: configs compete at equal training budget, and the searches differ
only in what they try and in stopping bad trials early (TPE's pruner; random search runs every trial to the
end). Tiny Shakespeare (character Transformer; needs ../shared/data) and a VAE on the built-in mnist5k.
Prints a table and writes benchmarks/results/tune.json; each study's report is written beside its runs.
"""

import argparse
import fcntl
import json
import os
import platform
import shutil
import time
from pathlib import Path

import torch

import genlab
from genlab.checkpoint import atomic_write_json
from genlab.tune import TuneOptions, tune

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "tune.json"

# name -> (model, options fixed for every trial, per-trial time as a fraction of --trial-seconds, data file)
TASKS = {
    "shakespeare": ("transformer", {"data": str(SHARED / "tinyshakespeare" / "input.txt"), "tokenizer": "char",
                                    "split": "block", "valid_fraction": 0.1, "test_fraction": 0.0, "seq_len": 64,
                                    "batch_size": 32, "eval_batches": 20},
                    1.0, SHARED / "tinyshakespeare" / "input.txt"),
    "vae": ("vae", {"data": "mnist5k", "batch_size": 128, "eval_batches": 10}, 0.5, None),
}
ARMS = {"default": None, "random": TuneOptions(sampler="random", pruner="none"),
        "tpe+pruning": TuneOptions(sampler="tpe", pruner="asha")}


def run_arm(task: str, arm: str, budget: float, trial_seconds: float, workdir: Path, seed: int = 0) -> dict:
    model, fixed, fraction, _ = TASKS[task]
    # Validation on a clock, a tenth of the trial's time apart: every trial, fast or slow per step, is seen by the
    # pruner at the same fractions of its budget (a step interval would show slow models rarely, pruned late).
    seconds = trial_seconds * fraction
    fixed = fixed | {"max_seconds": seconds, "max_steps": 10**9, "eval_interval": 10**9, "eval_seconds": seconds / 10,
                     "seed": 1337}
    start = time.perf_counter()
    if ARMS[arm] is None:
        summary = genlab.train(model, workdir / task / "default", fixed, overwrite=True)
        return {"task": task, "arm": arm, "best_val": summary["best_val"], "trials": 1, "complete": 1, "pruned": 0,
                "failed": 0, "seconds": round(time.perf_counter() - start, 1)}
    opts = TuneOptions(**{**vars(ARMS[arm]), "trials": 10**6, "timeout": budget, "sampler_seed": seed})
    study = workdir / task / (arm if seed == 0 else f"{arm}-seed{seed}")
    shutil.rmtree(study, ignore_errors=True)  # a fresh study: continuing an earlier one would count its trials
    summary = tune(model, study, fixed, opts)
    counts = summary["trials"]
    return {"task": task, "arm": arm, "seed": seed, "best_val": summary.get("best_value"),
            "trials": sum(counts.values()),
            "complete": counts.get("complete", 0), "pruned": counts.get("pruned", 0),
            "failed": counts.get("fail", 0), "best_params": summary.get("best_params"),
            "seconds": round(time.perf_counter() - start, 1), "report": summary.get("report")}


def save(row: dict) -> None:
    """Add `row` to the results file, replacing an earlier row of its task, arm and seed. Rows of other tasks and
    arms are kept, so each can be rerun alone, also by benchmark processes running side by side (a lock)."""
    key = lambda r: (r["task"], r["arm"], r.get("seed", 0))  # noqa: E731
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        earlier = json.loads(RESULTS.read_text())["rows"] if RESULTS.is_file() else []
        kept = [r for r in earlier if key(r) != key(row)]
        atomic_write_json(RESULTS, {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                                    "rows": kept + [row]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=600, help="seconds of trials per search arm")
    parser.add_argument("--trial-seconds", type=float, default=60, help="training seconds of each trial")
    parser.add_argument("--only", nargs="*", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--arms", nargs="*", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seed", type=int, default=0, help="the searches' sampler seed")
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench-tune")
    args = parser.parse_args()
    rows: list[dict] = []
    for task in args.only:
        data_file = TASKS[task][3]
        if data_file is not None and not data_file.is_file():
            print(f"skipping {task}: {data_file} is absent (../shared is optional)")
            continue
        for arm in args.arms:
            print(f"== {task}: {arm} (seed {args.seed}) ==", flush=True)
            row = run_arm(task, arm, args.budget, args.trial_seconds, args.workdir, args.seed)
            row["command"] = (f"benchmarks/tune.py --budget {args.budget:g} --trial-seconds {args.trial_seconds:g} "
                              f"--only {task} --arms {arm} --seed {args.seed}")
            row["threads"] = torch.get_num_threads()
            rows.append(row)
            save(row)
    print("\n| task | arm | seed | best validation loss | trials (complete / pruned / failed) | seconds |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['arm']} | {r.get('seed', 0)} | {r['best_val']:.4f} | {r['trials']} "
              f"({r['complete']} / {r['pruned']} / {r['failed']}) | {r['seconds']:.0f} |")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
