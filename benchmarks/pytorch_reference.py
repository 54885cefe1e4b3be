"""Times the seeds' PyTorch networks on this machine, to compare tfseg with in one sitting.

Issue 3's latency targets are set against PyTorch timings that MODELS.md recorded on the
project machine (FCN-ResNet18 1223 ms at 768x128, LinkNet 190.5 ms at 960x720). This script
re-measures those networks today, so that tfseg's figures (`python -m tfseg.bench`) can be
compared with PyTorch's as ratios from the same machine and day. The networks are written here
from the descriptions in MODELS.md and the seeds (no weights needed: timing only):

- FCN on the small-image ResNet18 (the interferogram seed's `fcn`): 3x3 stride-1 stem, no
  max-pool, output stride 8, 3x3 conv 512->64, 1x1 conv 64->2, transposed conv 16/8/4.
- LinkNet (the CamVid blog): ImageNet-stem ResNet18 encoder, four decoder blocks added to the
  encoder's feature maps, and the final 32-channel block.

Needs PyTorch, which tfseg does not depend on; in a separate environment. From PyPI (the
only index reachable here) `pip install torch` brings the CUDA build with its NVIDIA wheels
(torch 2.14.1: about 5.5 GB installed), which runs on a CPU as well; where PyTorch's own
index is reachable, `--index-url https://download.pytorch.org/whl/cpu` gets the CPU-only
build (under 1 GB):

    python3 -m venv /work/torchenv && /work/torchenv/bin/pip install torch numpy
    /work/torchenv/bin/python benchmarks/pytorch_reference.py --json runs/pytorch_reference.json
    /work/torchenv/bin/python benchmarks/pytorch_reference.py --train --model linknet \
        --size 128x128 --channels 1 --classes 2 --width 0.5 --batch 8

Inference (the default): one line per case, median and p90 latency (ms) at batch 1 after
warm-up, in eval mode under `torch.inference_mode`. `--train`: the median and p90 ms of one
training step of --model (forward, cross-entropy, backward, Adam at 1e-3, loss read back) on
a fixed random batch, and images per second; `python -m tfseg.bench --train --pytorch
PYTHON` runs it with each tfseg recipe row's batch, size, channels and classes. Both run with
as many threads as cores.
"""

import argparse
import json
import os
import statistics
import time

import torch
from torch import nn


def conv_bn_relu(cin, cout, kernel, stride=1, relu=True):
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
              nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block; 1x1 conv + BN shortcut when stride or width changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(cin, cout, 3, stride),
                                  conv_bn_relu(cout, cout, 3, relu=False))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout
                         else conv_bn_relu(cin, cout, 1, stride, relu=False))

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


def resnet18_stages(scale=1.0):
    """The four stages of ResNet18 (64, 128, 256, 512 channels x `scale`; strides 1, 2, 2, 2)."""
    widths = [int(c * scale) for c in (64, 128, 256, 512)]
    stages, cin = [], widths[0]
    for index, width in enumerate(widths):
        stride = 1 if index == 0 else 2
        stages.append(nn.Sequential(BasicBlock(cin, width, stride), BasicBlock(width, width, 1)))
        cin = width
    return nn.ModuleList(stages)


class FcnResnet18(nn.Module):
    """The interferogram seed's FCN: small-image ResNet18 (output stride 8) and its head."""

    def __init__(self, channels=1, classes=2):
        super().__init__()
        self.stem = conv_bn_relu(channels, 64, 3)
        self.stages = resnet18_stages()
        self.head = nn.Sequential(nn.Conv2d(512, 64, 3, 1, 1), nn.Conv2d(64, classes, 1),
                                  nn.ConvTranspose2d(classes, classes, 16, 8, 4))

    def forward(self, x):
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


class Decoder(nn.Module):
    """LinkNet decoder block m -> n: 1x1 m->m/4, 3x3 transposed conv (x stride), 1x1 m/4->n."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        mid = cin // 4
        self.body = nn.Sequential(
            conv_bn_relu(cin, mid, 1),
            nn.ConvTranspose2d(mid, mid, 3, stride, 1, output_padding=stride - 1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), conv_bn_relu(mid, cout, 1))

    def forward(self, x):
        return self.body(x)


class LinkNet(nn.Module):
    """LinkNet (Chaurasia & Culurciello 2017) as the CamVid blog builds it; `width` scales
    every layer's channels as tfseg's `linknet` option does (0.5: the default recipe's)."""

    def __init__(self, channels=3, classes=12, width=1.0):
        super().__init__()
        c64, c128, c256, c512, c32 = (int(c * width) for c in (64, 128, 256, 512, 32))
        self.stem = nn.Sequential(conv_bn_relu(channels, c64, 7, 2), nn.MaxPool2d(3, 2, 1))
        self.encoders = resnet18_stages(width)
        self.decoders = nn.ModuleList([Decoder(c64, c64, 1), Decoder(c128, c64, 2),
                                       Decoder(c256, c128, 2), Decoder(c512, c256, 2)])
        self.final = nn.Sequential(
            nn.ConvTranspose2d(c64, c32, 3, 2, 1, output_padding=1),
            nn.BatchNorm2d(c32), nn.ReLU(inplace=True),
            nn.Conv2d(c32, c32, 3, 1, 1), nn.BatchNorm2d(c32), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c32, classes, 2, 2))

    def forward(self, x):
        height, width = x.shape[2:]
        x = nn.functional.pad(x, (0, -width % 32, 0, -height % 32))   # strides need 32 | size
        x = self.stem(x)
        features = []
        for encoder in self.encoders:
            x = encoder(x)
            features.append(x)
        x = self.decoders[3](features[3])
        for level in (2, 1, 0):
            x = self.decoders[level](x + features[level])
        return self.final(x)[:, :, :height, :width]


CASES = (("fcn_resnet18", FcnResnet18, (1, 1, 768, 128)),
         ("linknet", LinkNet, (1, 3, 704, 960)),
         ("linknet", LinkNet, (1, 3, 720, 960)),
         ("linknet", LinkNet, (1, 3, 360, 480)))


TRAIN_MODELS = {"fcn_resnet18": FcnResnet18, "linknet": LinkNet}


def time_model(model, shape, warmup, repeats):
    """Median and p90 milliseconds of `repeats` calls after `warmup` calls."""
    x = torch.randn(shape)
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(1e3 * (time.perf_counter() - start))
    return _summary(times)


def time_training(model, shape, classes, warmup, repeats):
    """Median and p90 milliseconds of one training step (forward, cross-entropy, backward,
    Adam at 1e-3, loss read back) on one fixed random batch, after `warmup` steps."""
    torch.manual_seed(0)
    x = torch.rand(shape) * 255
    y = torch.randint(0, classes, (shape[0], *shape[2:]))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(1e3 * (time.perf_counter() - start))
    return _summary(times)


def _summary(times):
    times = sorted(times)
    return {"median_ms": statistics.median(times),
            "p90_ms": times[min(len(times) - 1, round(0.9 * (len(times) - 1)))]}


def parse_size(text):
    height, width = (int(part) for part in text.lower().split("x"))
    return height, width


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--train", action="store_true",
                        help="time one training step of --model instead of the inference cases")
    parser.add_argument("--model", choices=sorted(TRAIN_MODELS), default="linknet")
    parser.add_argument("--size", type=parse_size, default=(128, 128), metavar="HxW")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--width", type=float, default=1.0,
                        help="LinkNet's channel multiplier (tfseg's linknet width option)")
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": []}
    if args.train:
        results["rows"].append(train_row(args))
    else:
        for name, builder, shape in CASES:
            model = builder().eval()
            row = {"model": name, "input": "x".join(map(str, shape[2:] + shape[1:2])),
                   "parameters": sum(p.numel() for p in model.parameters()),
                   **time_model(model, shape, args.warmup, args.repeats)}
            results["rows"].append(row)
            print(f"{name} {row['input']}: {row['median_ms']:.1f} ms median, "
                  f"{row['p90_ms']:.1f} ms p90 ({row['parameters']:,} parameters)", flush=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)


def train_row(args):
    """The training-step row of --model at --batch x --size x --channels, --classes."""
    options = {"channels": args.channels, "classes": args.classes}
    if args.model == "linknet":
        options["width"] = args.width
    model = TRAIN_MODELS[args.model](**options)
    shape = (args.batch, args.channels, *args.size)
    row = {"model": args.model, "batch": args.batch,
           "input": f"{args.size[0]}x{args.size[1]}x{args.channels}", **options,
           "parameters": sum(p.numel() for p in model.parameters()),
           **time_training(model, shape, args.classes, args.warmup, args.repeats)}
    row["images_per_s"] = 1e3 * args.batch / row["median_ms"]
    print(f"{args.model} train {args.batch}x{row['input']}: {row['median_ms']:.1f} ms/step "
          f"median, {row['p90_ms']:.1f} p90, {row['images_per_s']:.2f} images/s "
          f"({row['parameters']:,} parameters, {torch.get_num_threads()} threads)", flush=True)
    return row


if __name__ == "__main__":
    main()
