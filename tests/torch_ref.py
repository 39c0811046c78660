#!/usr/bin/python3
"""PyTorch side of the model engine's parity tests.

Run with Debian's /usr/bin/python3 (python3-torch). Reads and writes
safetensors and IDX files by hand (no safetensors package needed).

  torch_ref.py grads MODEL IMAGES LABELS OUT [--steps K --lr LR
               --momentum M --wd WD]
      Loss and gradients of the mean NLL on the batch (dropout off), as
      safetensors OUT with the state_dict names (loss in __metadata__).
      With --steps K, then K torch.optim.SGD steps on the same batch; the
      parameters after them go to OUT.sgd.
  torch_ref.py predict MODEL IMAGES OUT
      Log-probabilities of every image (eval mode), as an IDX-like raw
      float file: OUT holds n*10 little-endian float32.
  torch_ref.py make MODEL OUT_PRED IMAGES LABELS TEST_IMAGES --seed S
               --steps K
      A model initialised by torch (manual_seed S), trained K SGD steps
      on IMAGES, saved as safetensors MODEL; its log-probabilities of
      TEST_IMAGES go to OUT_PRED as in predict.
Exit status 0 on success, 2 on bad use, 3 when torch is missing.
"""
import json
import struct
import sys

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    sys.stderr.write("torch_ref.py: torch is not installed\n")
    sys.exit(3)

MEAN = 0.1307
STD = 0.3081


class Net(nn.Module):
    """The reference digit CNN, as the DADC walkthrough writes it."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 320)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


def read_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    (hlen,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + hlen].decode("utf-8"))
    data = buf[8 + hlen:]
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, t in header.items():
        if t["dtype"] != "F32":
            raise ValueError("%s: dtype %s" % (name, t["dtype"]))
        begin, end = t["data_offsets"]
        flat = struct.unpack("<%df" % ((end - begin) // 4), data[begin:end])
        tensors[name] = torch.tensor(flat, dtype=torch.float32).reshape(
            t["shape"])
    return tensors, meta


def write_safetensors(path, tensors, meta):
    header = {}
    blobs = []
    at = 0
    for name, t in tensors.items():
        t = t.detach().contiguous().to(torch.float32)
        raw = struct.pack("<%df" % t.numel(), *t.flatten().tolist())
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [at, at + len(raw)]}
        blobs.append(raw)
        at += len(raw)
    header["__metadata__"] = {k: str(v) for k, v in meta.items()}
    text = json.dumps(header).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def read_idx(path):
    with open(path, "rb") as f:
        buf = f.read()
    if buf[0] != 0 or buf[1] != 0 or buf[2] != 8:
        raise ValueError("%s: not an unsigned-byte IDX file" % path)
    ndim = buf[3]
    dims = struct.unpack(">%dI" % ndim, buf[4:4 + 4 * ndim])
    data = torch.frombuffer(bytearray(buf[4 + 4 * ndim:]), dtype=torch.uint8)
    return data.reshape(dims)


def normalise(images):
    x = images.to(torch.float32).div(255.0).reshape(-1, 1, 28, 28)
    mean = torch.tensor(MEAN, dtype=torch.float32)
    std = torch.tensor(STD, dtype=torch.float32)
    return (x - mean) / std


def load_model(path):
    net = Net()
    tensors, meta = read_safetensors(path)
    net.load_state_dict(tensors)
    return net, meta


def write_floats(path, t):
    t = t.detach().contiguous().to(torch.float32).flatten()
    with open(path, "wb") as f:
        f.write(struct.pack("<%df" % t.numel(), *t.tolist()))


def option(args, name, default):
    if name in args:
        return type(default)(args[args.index(name) + 1])
    return default


def cmd_grads(args):
    net, _ = load_model(args[0])
    x = normalise(read_idx(args[1]))
    y = read_idx(args[2]).to(torch.int64)
    net.eval()  # dropout off; gradients still flow
    loss = F.nll_loss(net(x), y)
    loss.backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    write_safetensors(args[3], grads, {"loss": repr(loss.item())})

    steps = option(args, "--steps", 0)
    if steps > 0:
        opt = torch.optim.SGD(net.parameters(), lr=option(args, "--lr", 0.01),
                              momentum=option(args, "--momentum", 0.5),
                              weight_decay=option(args, "--wd", 0.0))
        for _ in range(steps):
            opt.zero_grad()
            F.nll_loss(net(x), y).backward()
            opt.step()
        write_safetensors(args[3] + ".sgd", net.state_dict(), {})


def cmd_predict(args):
    net, _ = load_model(args[0])
    net.eval()
    with torch.no_grad():
        write_floats(args[2], net(normalise(read_idx(args[1]))))


def cmd_make(args):
    torch.manual_seed(option(args, "--seed", 1))
    net = Net()
    x = normalise(read_idx(args[2]))
    y = read_idx(args[3]).to(torch.int64)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    net.train()
    for step in range(option(args, "--steps", 100)):
        lo = (step * 64) % x.shape[0]
        opt.zero_grad()
        F.nll_loss(net(x[lo:lo + 64]), y[lo:lo + 64]).backward()
        opt.step()
    write_safetensors(args[0], net.state_dict(), {"data": "torch_ref.py"})
    net.eval()
    with torch.no_grad():
        write_floats(args[1], net(normalise(read_idx(args[4]))))


def main():
    torch.set_num_threads(1)
    cmds = {"grads": (cmd_grads, 4), "predict": (cmd_predict, 3),
            "make": (cmd_make, 5)}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds \
            or len(sys.argv) - 2 < cmds[sys.argv[1]][1]:
        sys.stderr.write(__doc__)
        return 2
    fn, _ = cmds[sys.argv[1]]
    fn(sys.argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
