"""`genlab demo` (and `make demo`): the main jobs on built-in data, start to finish in a few minutes:
a character-level Transformer on US census names, then a VAE on 5,000 MNIST digits."""

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


MNIST_VAE = {
    "data": "mnist5k", "arch": "mlp", "latent_dim": 32, "hidden": 512,
    "batch_size": 128, "lr": 1e-3, "warmup_steps": 100, "max_steps": 100_000, "eval_interval": 500,
}


def run_demo(out: Path, seconds: float = 120.0) -> None:
    """Each demo in its own run directory under `out`, `seconds` of training each."""
    names_lm(out / "names-transformer", seconds)
    mnist_vae(out / "mnist5k-vae", seconds)


def names_lm(out: Path, seconds: float) -> None:
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


def mnist_vae(out: Path, seconds: float) -> None:
    """Train a VAE on mnist5k for `seconds`, write a sample grid, report the test likelihood bounds."""
    print(f"\nTraining a VAE (Bernoulli decoder, 32-d latent) on 5,000 MNIST digits for {seconds:.0f} s ...",
          flush=True)
    genlab.train("vae", out, MNIST_VAE | {"max_seconds": seconds}, overwrite=True)
    genlab.sample(out, num_samples=64, seed=0)
    report = genlab.evaluate(out, num_samples=500)
    print(f"Sample grid: {(out / 'samples.png').resolve()}")
    print(f"Test split ({report['n_images']} digits never trained on): -ELBO {report['neg_elbo_nats']:.1f} nats, "
          f"IWAE bound on -log p(x) {report['iwae_nll_nats']:.1f} nats per image "
          f"({report['iwae_bits_per_dim']:.3f} bits/dim)")
    print(f"Sample quality ({report['feature_net']}): FD {report['fd']:.2f}, precision {report['precision']:.2f}, "
          f"recall {report['recall']:.2f}; full report: {(out / 'eval.md').resolve()}")
