"""What differs between segmentation and super-resolution: losses, metrics, validation panels
and the task objects the training loop asks for them (`factory.make_task`)."""
