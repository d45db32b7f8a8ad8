"""`genlab demo` (and `make demo`): the main job on built-in data, start to finish in a few minutes."""

from pathlib import Path

import genlab
from genlab.checkpoint import RunDir
from genlab.data.text import TextDataConfig, load_corpus
from genlab.generation import generate
from genlab.tasks.text import start_ids

NAMES_LM = {
    "data": "names", "tokenizer": "char", "seq_len": 32,
    "n_layer": 4, "n_head": 4, "n_embd": 64, "dropout": 0.0,
    "batch_size": 64, "lr": 3e-3, "warmup_steps": 200, "max_steps": 100_000, "eval_interval": 500,
}


def run_demo(out: Path, seconds: float = 120.0) -> None:
    """Train a character-level Transformer on `names` for `seconds`, print 20 new names and test perplexity."""
    print(f"Training a character-level Transformer on US census names for {seconds:.0f} s ...", flush=True)
    genlab.train("transformer", out, NAMES_LM | {"max_seconds": seconds}, overwrite=True)
    model = genlab.load(out)
    tokenizer = model.artifacts
    train_names = set(load_corpus(TextDataConfig(data="names")).train.split())
    newline = start_ids(tokenizer)[0]
    names, current = [], []
    for token in generate(model, [newline], 1000, temperature=1.0, seed=0):
        if token != newline:
            current.append(token)
            continue
        if current:
            names.append(tokenizer.decode(current))
            current = []
        if len(names) == 20:
            break
    print("\n20 names sampled from the model (marked * when the name is not in the training split):")
    for name in names:
        print(f"  {name}{'' if name in train_names else '  *'}")
    new = sum(name not in train_names for name in names)
    report = genlab.evaluate(out)
    print(f"\n{new} of 20 samples are new names.")
    print(f"Test split ({report['tokens']:,} characters never trained on): cross-entropy "
          f"{report['cross_entropy_nats']:.4f} nats/char, perplexity {report['perplexity']:.3f}, "
          f"{report['bits_per_char']:.3f} bits/char")
    print(f"Run directory: {RunDir(out).path.resolve()}  (try: genlab sample {out} --prompt ma)")
