"""`python -m tfseg.runtimes PATH RUNTIME INPUTS.npy OUTPUTS.npy`: runs the model at PATH in
RUNTIME on the pixels in INPUTS.npy, saves its outputs and prints the runtime's version.
`tfseg.deploy.parity` checks a SavedModel this way, in a fresh process of its own."""

import sys

from tfseg.deploy.runtimes import run_on_files


def main(argv=None):
    path, runtime, inputs, outputs = (sys.argv[1:] if argv is None else argv)[:4]
    print(run_on_files(path, runtime, inputs, outputs))


if __name__ == "__main__":
    main()
