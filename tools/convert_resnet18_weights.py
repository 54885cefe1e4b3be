#!/usr/bin/env python
"""Converts torchvision ResNet18 weights into a Keras weights file for tfseg's ResNet18.

The input is a torchvision `resnet18` state_dict saved as an .npz of numpy arrays under the
torchvision names (conv1.weight, bn1.running_mean, layer1.0.conv1.weight,
layer2.0.downsample.0.weight, ...), written on any machine with PyTorch:

    sd = torchvision.models.resnet18(weights="IMAGENET1K_V1").state_dict()
    numpy.savez("resnet18.npz", **{k: v.numpy() for k, v in sd.items()})

The output holds the weights of `build_resnet_backbone(depth=18)` (ImageNet stem, width 1,
3 input channels); `build_resnet_backbone(depth=18, weights=path)` loads it. Conv kernels go
from OIHW to HWIO; batch norm takes weight, bias, running_mean and running_var (both use
epsilon 1e-5). The classifier (fc.*) and num_batches_tracked are not used. Example:

    python tools/convert_resnet18_weights.py resnet18.npz resnet18_imagenet.weights.h5
"""

import argparse
import re
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from tfseg.cli import check_exists, run_cli
from tfseg.utils.errors import TfsegError
from tfseg.utils.files import check_regular_file, check_writable_folder, write_bytes_atomic

UNUSED_KEYS = re.compile(r"fc\.(weight|bias)|.*\.num_batches_tracked")


def torchvision_names(unit):
    """(conv, bn) torchvision prefixes of one of our units: stem -> conv1/bn1,
    stage{s}_block{b}_{i} -> layer{s}.{b-1}.conv{i}/bn{i}, ..._proj -> downsample.0/1."""
    if unit == "stem":
        return "conv1", "bn1"
    stage, block, part = re.fullmatch(r"stage(\d)_block(\d)_(1|2|proj)", unit).groups()
    prefix = f"layer{stage}.{int(block) - 1}"
    if part == "proj":
        return f"{prefix}.downsample.0", f"{prefix}.downsample.1"
    return f"{prefix}.conv{part}", f"{prefix}.bn{part}"


def convert(npz_path, weights_path):
    """Writes `weights_path` (a new .weights.h5 file) from the torchvision state_dict `npz_path`,
    complete or not at all.

    Raises:
        TfsegError: the output name does not end in .weights.h5, exists or cannot be written;
            the input is not an .npz archive of finite floating-point arrays, or not a
            torchvision ResNet18 state_dict (missing or extra keys, such as a deeper ResNet's,
            or arrays of other shapes).
    """
    weights_path = Path(weights_path)
    if not weights_path.name.endswith(".weights.h5"):
        raise TfsegError(f"{weights_path}: the output name must end in .weights.h5 (the Keras "
                         f"weights format)")
    if weights_path.exists():
        raise TfsegError(f"{weights_path}: already exists; remove it or choose another name")
    check_writable_folder(weights_path.parent, "weights file")
    state = read_state_dict(npz_path)
    # Deferred: TensorFlow takes seconds to load, and the checks above need none of it.
    from tfseg.models.backbones.resnet import build_resnet_backbone

    model = build_resnet_backbone(depth=18)
    assignments = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        unit, kind = layer.name.removeprefix(f"{model.name}_").rsplit("_", 1)
        conv, bn = torchvision_names(unit)
        if kind == "conv":
            assignments[layer.name] = (layer, [(f"{conv}.weight", (2, 3, 1, 0))])
        else:
            assignments[layer.name] = (layer, [(f"{bn}.{field}", None) for field in
                                               ("weight", "bias", "running_mean", "running_var")])
    expected = {key for _, sources in assignments.values() for key, _ in sources}
    if set(state) != expected:
        raise TfsegError(f"{npz_path}: not a torchvision ResNet18 state_dict; missing keys "
                         f"{sorted(expected - set(state))[:6]}, unexpected keys "
                         f"{sorted(set(state) - expected)[:6]} (a ResNet of another depth?)")
    for layer, sources in assignments.values():
        values = [state[key].transpose(axes) if axes else state[key] for key, axes in sources]
        for (key, _), value, weight in zip(sources, values, layer.weights):
            if value.shape != tuple(weight.shape):
                raise TfsegError(f"{npz_path}: {key} converts to shape {value.shape}, but "
                                 f"ResNet18 layer {layer.name} needs {tuple(weight.shape)}")
        layer.set_weights(values)
    with tempfile.TemporaryDirectory() as folder:
        temporary = Path(folder) / weights_path.name
        try:
            model.save_weights(str(temporary))
            data = temporary.read_bytes()
        except OSError as error:
            raise TfsegError(f"{weights_path}: cannot write ({error.strerror or error})") from None
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(weights_path, data)
    return weights_path


def read_state_dict(npz_path):
    """{torchvision name: array} of the arrays in the .npz at `npz_path` that ResNet18 uses
    (fc.* and num_batches_tracked are left out); TfsegError naming the file unless it is an
    .npz archive of finite floating-point arrays."""
    check_exists(npz_path, "file")
    check_regular_file(npz_path, "a torchvision state_dict saved as .npz")
    if not zipfile.is_zipfile(npz_path):   # np.load would read an .npy or a pickle instead
        raise TfsegError(f"{npz_path}: not an .npz archive (numpy.savez's zip of arrays)")
    try:
        with np.load(npz_path, allow_pickle=False) as archive:
            state = {key: archive[key] for key in archive.files if not UNUSED_KEYS.fullmatch(key)}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise TfsegError(f"{npz_path}: not a readable .npz archive ({error})") from None
    for key, value in state.items():
        if not np.issubdtype(value.dtype, np.floating):
            raise TfsegError(f"{npz_path}: {key} holds {value.dtype} values; expected floating "
                             f"point weights")
        if not np.isfinite(value).all():
            raise TfsegError(f"{npz_path}: {key} holds NaN or infinite values")
    return state


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("npz", type=Path, help="torchvision resnet18 state_dict as .npz")
    parser.add_argument("output", type=Path, help="Keras weights file to write (.weights.h5)")
    args = parser.parse_args(argv)
    convert(args.npz, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
