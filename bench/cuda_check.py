"""The CUDA path against the CPU one, on real test reviews: the same probabilities and labels, batch invariance on
the GPU, and an explanation computed there. Needs a GPU; CI has none, so this is not part of the test suite.

    python -m bench.cuda_check --data ../shared/data/aclImdb_v1.tar.gz
"""

from __future__ import annotations

import argparse

import torch

from bench.harness import test_reviews
from model import load_model
from model.explain import explain


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/aclImdb_v1.tar.gz")
    p.add_argument("--reviews", type=int, default=500)
    a = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device here")
    print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0))
    texts = test_reviews(a.data, a.reviews, seed=0)
    cpu, gpu = load_model(device="cpu"), load_model(device="cuda")
    on_cpu, on_gpu = cpu.predict_proba(texts), gpu.predict_proba(texts)
    same = sum((c >= 0.5) == (g >= 0.5) for c, g in zip(on_cpu, on_gpu))
    print(f"{len(texts)} reviews: max |P_cpu - P_cuda| = {max(abs(c - g) for c, g in zip(on_cpu, on_gpu)):.2e}, "
          f"same label {same}/{len(texts)}")
    alone = [gpu.predict_proba([t])[0] for t in texts[:20]]
    together = gpu.predict_proba(texts[:20])
    print(f"CUDA batch invariance (20 reviews alone vs together): max diff "
          f"{max(abs(x - y) for x, y in zip(alone, together)):.2e}")
    e = explain(gpu, texts[0], max_words=64)
    print(f"CUDA explanation: {len(e.words)} words, {e.explained_words} explained")


if __name__ == "__main__":
    main()
