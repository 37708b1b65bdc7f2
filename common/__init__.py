"""Framework-neutral code, written once for torch_/ and jittor_/: one room per concern.

Everything here is plain Python + numpy, so the two frameworks cannot drift apart on it.
The framework folders only turn these numpy batches into tensors and do the maths.

    config        paths, frameworks, defaults, presets, CIFAR-100 pairs, the shared flags
    errors        the one-line user errors
    datasets      CIFAR-10/100 specs, download, reading the official files, the train/val split
    batches       crop + flip + normalise, per-epoch seeds, batch order, prefetch
    schedules     step LR and the distillation warm-up
    weights       initial weights drawn in numpy (same numbers in both frameworks)
    files         atomic writes (nothing half-written after a crash)
    checkpoint    the checkpoint file (safetensors: arrays + JSON), resume checks
    foreign       plain torch files (mdistiller's teachers)
    safe_pickle   reads pickles (CIFAR files, .pth, .pkl) without running code
                  (with unpickler and torch_pickle)
    logs          TensorBoard events, run folders, progress lines, results
    metrics       sample-weighted accuracy and loss
    distributed   data-parallel runs: rank and world size under torchrun / mpirun, each rank's samples
    env           threads (per process), GPU detection, Jittor's environment
    tables        the one table writer (Markdown and terminal)
"""
