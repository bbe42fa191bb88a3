"""Model-agnostic machinery: data on the device, checkpoints, run directories, training loops."""
