"""The machinery around the method: flags, ranks, devices, run folders, checkpoints, console
lines, signals and one-line errors. A first reading of GrowLength may skip this folder; the
method is in schedule.py, data.py, model.py, kernels/ and train.py. Nothing here imports train.py."""
