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

Needs PyTorch, which tfseg does not depend on; in a separate environment:

    python -m venv /opt/torchref && /opt/torchref/bin/pip install "torch==2.13.0+cpu" numpy
    /opt/torchref/bin/python benchmarks/pytorch_reference.py --json runs/pytorch_reference.json

Prints one line per case: median and p90 latency (ms) at batch 1 after warm-up, in eval mode
under `torch.inference_mode`, with as many threads as cores.
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


def resnet18_stages():
    """The four stages of ResNet18 (64, 128, 256, 512; strides 1, 2, 2, 2)."""
    widths, stages, cin = (64, 128, 256, 512), [], 64
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
    """LinkNet (Chaurasia & Culurciello 2017) as the CamVid blog builds it."""

    def __init__(self, classes=12):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_relu(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
        self.encoders = resnet18_stages()
        self.decoders = nn.ModuleList([Decoder(64, 64, 1), Decoder(128, 64, 2),
                                       Decoder(256, 128, 2), Decoder(512, 256, 2)])
        self.final = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 3, 2, 1, output_padding=1),
            nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, 1, 1), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(32, classes, 2, 2))

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
    times.sort()
    return {"median_ms": statistics.median(times),
            "p90_ms": times[min(len(times) - 1, round(0.9 * (len(times) - 1)))]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": []}
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


if __name__ == "__main__":
    main()
