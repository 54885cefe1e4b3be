"""The library of `python -m tfseg.bench`: cases, child processes, the machine's reference
figures, FLOP counting, runtime rows, input pipelines and the report."""
