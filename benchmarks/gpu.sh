#!/usr/bin/env bash
# The GPU check: on a machine with a CUDA card, the test suite's training paths (tests that name no device
# train on "auto", CUDA there) and short LM, VAE and GAN benchmark runs under mixed precision ("auto" precision is bf16 on
# a card that supports it). Results go to benchmarks/results/{lm,vae,gan}-TAG.json beside the CPU ones.
#
#     bash benchmarks/gpu.sh [SECONDS] [TAG]      # from the repository root; default 20 s per run, tag "gpu"
#
# Needs genlab importable (pip install -e . or PYTHONPATH=src) and ../shared/data for the LM rows (skipped without).
set -u
seconds=${1:-20}
tag=${2:-gpu}
python=${PYTHON:-python3}
"$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: nothing to check")' \
    || exit 1
"$python" -c 'import torch; print(torch.cuda.get_device_name(), "torch", torch.__version__)'
status=0
# xdist spreads the files over workers where pytest-xdist is installed; each worker shares the one card.
workers=$("$python" -c 'import xdist' 2>/dev/null && echo "-n 4 --dist loadfile")
echo "== tests"
# shellcheck disable=SC2086  # $workers is empty or two words
"$python" -m pytest -q -p no:cacheprovider $workers tests/test_schedulers.py tests/test_diffusion.py \
    tests/test_vae.py tests/test_gan.py tests/test_lm.py tests/test_image_task.py tests/test_resume.py \
    tests/test_text_to_image.py tests/test_generation.py tests/test_cli.py tests/test_captions.py \
    tests/test_text_image_eval.py tests/test_images_data.py tests/test_image_metrics.py \
    tests/test_text_encoders.py tests/test_registry.py || status=1
echo "== language models"
"$python" benchmarks/lm.py --only shakespeare-gpt-b32-135s shakespeare-lstm-135s ptb-lstm \
    --seconds "$seconds" --name "lm-$tag" || status=1
echo "== VAEs"
"$python" benchmarks/vae.py --seconds "$seconds" --name "vae-$tag" || status=1
echo "== GANs"
"$python" benchmarks/gan.py --seconds "$seconds" --seeds 1 --name "gan-$tag" || status=1
exit $status
