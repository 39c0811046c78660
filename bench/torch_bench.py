#!/usr/bin/python3
"""PyTorch side of bench/bench_model: the reference digit CNN in
python3-torch on the same data and hyperparameters as our engine
(batch 64, SGD lr 0.01 momentum 0.5, 2 threads). Prints one JSON object:
train_images_per_s, eval_s (the whole test set, best of 3), single_us.

  torch_bench.py MNIST_DIR [STEPS]
Exit status 0, 2 on bad use, 3 when torch is missing.
"""
import json
import os
import sys
import time

# The model, the IDX reader and the normalisation are the parity test's,
# so the benchmark runs exactly the module the tests compare against.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests"))
from torch_ref import Net, normalise, read_idx, torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def bench_train(net, x, y, steps):
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.5)
    net.train()
    batches = x.shape[0] // 64
    for step in range(steps + 10):
        if step == 10:
            t0 = time.perf_counter()
        lo = (step % batches) * 64
        opt.zero_grad()
        F.nll_loss(net(x[lo:lo + 64]), y[lo:lo + 64]).backward()
        opt.step()
    return steps * 64 / (time.perf_counter() - t0)


def bench_eval(net, x):
    net.eval()
    best = 1e30
    with torch.no_grad():
        for _ in range(3):
            t0 = time.perf_counter()
            for lo in range(0, x.shape[0], 1000):
                net(x[lo:lo + 1000]).argmax(dim=1)
            best = min(best, time.perf_counter() - t0)
    return best


def bench_single(net, images, reps=1000):
    net.eval()
    with torch.no_grad():
        for i in range(reps + 10):
            if i == 10:
                t0 = time.perf_counter()
            # one image as a client sends it: bytes in, probabilities out
            x = normalise(images[i % images.shape[0]])
            net(x).exp()
    return (time.perf_counter() - t0) / reps * 1e6


def main():
    if len(sys.argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    torch.set_num_threads(2)
    torch.manual_seed(1)
    d = sys.argv[1]
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    xtr = normalise(read_idx(os.path.join(d, "train-images-idx3-ubyte")))
    ytr = read_idx(os.path.join(d, "train-labels-idx1-ubyte")).long()
    test = read_idx(os.path.join(d, "t10k-images-idx3-ubyte"))
    net = Net()
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(),
           "train_images_per_s": bench_train(net, xtr, ytr, steps),
           "eval_images": int(test.shape[0]),
           "eval_s": bench_eval(net, normalise(test)),
           "single_us": bench_single(net, test)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
