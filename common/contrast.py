"""CRD's sampling of negatives, in numpy, the same for both frameworks (mdistiller's CIFAR100InstanceSample, mode
"exact"): each training sample is contrasted with itself (its row of the memory bank) and K rows of samples of
other classes. mdistiller draws them in its data loader's workers with numpy's global RNG; here one stream per
batch, seeded by the run's seed and the number of batches drawn before it (saved in the checkpoint), so that a
resumed run draws what the uninterrupted one drew."""
import numpy as np

MDISTILLER_K = 16384  # CRD.NCE.K, for CIFAR-100's 50,000 training images
MDISTILLER_DATA = 50000


def default_k(num_data):
    """mdistiller's share of the training set as negatives per sample, 16384 of 50,000, for a split of num_data
    images (at least 1): 16384 on CIFAR-100's, 1638 on the full preset's 5,000, 82 on the quick preset's 250. A memory
    bank's read costs batch x (K + 1) x 128 floats a step: mdistiller's K on 250 images would draw each about 65
    times per sample."""
    return max(1, round(num_data * MDISTILLER_K / MDISTILLER_DATA))


def negatives_by_class(labels, num_classes):
    """For each class, the rows of the training split whose label differs (mdistiller's cls_negative)."""
    rows = np.arange(len(labels))
    return [rows[labels != c] for c in range(num_classes)]


def draw_contrast(index, labels, negatives, k, rng):
    """[B, K + 1] rows of the memory bank: each sample's own row (index), then K rows of other classes, drawn without
    replacement where the class has K or more negatives, with replacement otherwise (mdistiller's choice)."""
    out = np.empty((len(index), k + 1), dtype=np.int64)
    out[:, 0] = index
    for b, label in enumerate(labels):
        pool = negatives[label]
        out[b, 1:] = pool[rng.choice(len(pool), k, replace=k > len(pool))]
    return out


def contrast_rng(seed, draws):
    """The numpy stream of one batch's negatives: [seed, 8, batches drawn before it] (streams [seed, 1 ... 7] seed
    the methods' modules)."""
    return np.random.default_rng([seed, 8, draws])
