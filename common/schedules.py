"""Schedules: computed here, per epoch, and set by hand in both frameworks.

(Jittor's MultiStepLR decays one epoch later than torch's; the repo uses neither.)
"""


def lr_at(epoch, base_lr, milestones, gamma=0.1):
    """Step LR: base_lr * gamma^(number of milestones <= epoch), epochs 0-based."""
    return base_lr * gamma ** sum(epoch >= m for m in milestones)


def warmup_factor(epoch, warmup_epochs):
    """Linear warm-up of the distillation weight, as mdistiller: min((epoch+1)/warmup, 1)."""
    return 1.0 if warmup_epochs <= 0 else min((epoch + 1) / warmup_epochs, 1.0)

