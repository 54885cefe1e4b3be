"""Low-level helpers that import nothing from the rest of tfseg: user-facing errors, atomic
file writes, image files, child processes and what this machine computes fast."""
