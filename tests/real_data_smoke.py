"""Real-data smoke (not part of pytest: it needs the real CIFAR-10 in data/).

Trains the quick-preset teacher in both frameworks on real CIFAR-10, evaluates it on the
10,000 test images, and fails unless top-1 is clearly above chance (10%) in both.
.ci/run runs it after building data/ with ../shared/data/build_cifar10.py.
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common.paths import DATA_DIR  # noqa: E402
from common.datasets import CIFAR10_FOLDER  # noqa: E402

THRESHOLD = 25.0  # percent; chance is 10%, the quick teacher reaches about 46%


def main():
    if not os.path.isdir(os.path.join(DATA_DIR, CIFAR10_FOLDER)):
        sys.exit(f"real_data_smoke: no CIFAR-10 in {DATA_DIR}; build or download it first")
    out = tempfile.mkdtemp(prefix="kd-smoke-")
    env = dict(os.environ, KD_LOG_DIR=os.path.join(out, "log"), KD_CKPT_DIR=os.path.join(out, "ckpt"))
    results = {}
    for fw in ("torch", "jittor"):
        run = lambda stage, *args: subprocess.run([sys.executable, os.path.join(ROOT, f"{fw}_", f"{stage}.py"), *args],
                                                   env=env, cwd=ROOT, check=True)
        run("train_teacher", "--preset", "quick", "--name", "smoke")
        json_path = os.path.join(out, f"{fw}.json")
        run("test", "--ckpt", os.path.join(out, "ckpt", f"smoke_{fw}.ckpt"), "--json", json_path)
        with open(json_path) as f:
            results[fw] = json.load(f)["top1"]
    print("real-data smoke, quick teacher, test top-1: " + ", ".join(f"{fw} {v:.2f}%" for fw, v in results.items()))
    failed = [fw for fw, v in results.items() if v < THRESHOLD]
    if failed:
        sys.exit(f"real_data_smoke: top-1 below {THRESHOLD}% for {', '.join(failed)}")
    print(f"real-data smoke passed (threshold {THRESHOLD}%)")


if __name__ == "__main__":
    main()
