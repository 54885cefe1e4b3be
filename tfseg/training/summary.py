"""The console summary of a finished run: its scores and where everything was written."""

from tfseg.deploy.parity import describe


def format_scores(scores):
    """The scores a console line shows, e.g. "loss 0.0391, foreground IoU 0.8155"."""
    names = [("loss", "loss"), ("foreground_iou", "foreground IoU"), ("mean_iou", "mean IoU"),
             ("pixel_accuracy", "pixel accuracy"), ("psnr_y", "PSNR (Y)"),
             ("ssim_y", "SSIM (Y)"), ("bicubic_psnr_y", "bicubic PSNR (Y)")]
    return ", ".join(f"{label} {scores[key]:.4f}" for key, label in names if key in scores)


def print_summary(run_dir, scores, exports, seconds):
    """Prints the run's time and validation scores, and where its files and exports are."""
    lines = [f"\nDone in {seconds // 60:.0f} min {seconds % 60:.0f} s. Validation: "
             + format_scores(scores),
             f"  run directory  {run_dir}",
             f"  config         {run_dir / 'config.yaml'}",
             f"  metrics        {run_dir / 'metrics.json'}",
             f"  checkpoints    {run_dir / 'checkpoints'}"]
    if "saved_model" in exports:
        lines.append(f"  SavedModel     {exports['saved_model']}")
    if "onnx" in exports:
        lines.append(f"  ONNX           {exports['onnx']}")
    for runtime, result in exports.get("parity", {}).items():
        lines.append(f"  parity         {runtime}: {describe(result)}")
    lines.append(f"  TensorBoard    tensorboard --logdir {run_dir / 'logs'}")
    print("\n".join(lines))
