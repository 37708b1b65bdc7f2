"""Schedules: computed here, per epoch, and set by hand in both frameworks.

(Jittor's MultiStepLR decays one epoch later than torch's; the repo uses neither.)
"""
import math

WARMUP_LR, MIN_LR = 1e-6, 1e-5  # DeiT's --warmup-lr and --min-lr, the ends of its cosine schedule


def lr_at(epoch, base_lr, milestones, gamma=0.1):
    """Step LR: base_lr * gamma^(number of milestones <= epoch), epochs 0-based."""
    return base_lr * gamma ** sum(epoch >= m for m in milestones)


def cosine_lr_at(epoch, base_lr, epochs, warmup_epochs):
    """DeiT's schedule (timm's CosineLRScheduler, stepped per epoch, warm-up not prefixed): from WARMUP_LR linearly
    up over warmup_epochs, then MIN_LR + (base_lr - MIN_LR) (1 + cos(pi epoch / epochs)) / 2, epochs 0-based."""
    if epoch < warmup_epochs:
        return WARMUP_LR + epoch * (base_lr - WARMUP_LR) / warmup_epochs
    return MIN_LR + 0.5 * (base_lr - MIN_LR) * (1 + math.cos(math.pi * epoch / epochs))


def epoch_lr(epoch, config):
    """The run's lr in an epoch: --schedule step (milestones) or cosine (--lr-warmup, then cosine to --epochs)."""
    if config.schedule == "cosine":
        return cosine_lr_at(epoch, config.lr, config.epochs, config.lr_warmup)
    return lr_at(epoch, config.lr, config.milestones)


def warmup_factor(epoch, warmup_epochs):
    """Linear warm-up of the distillation weight, as mdistiller: min((epoch+1)/warmup, 1)."""
    return 1.0 if warmup_epochs <= 0 else min((epoch + 1) / warmup_epochs, 1.0)
