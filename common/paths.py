"""Where things live, relative to the repo root: data/, log/, ckpt/, img/.

KD_DATA_DIR / KD_LOG_DIR / KD_CKPT_DIR / KD_IMG_DIR move them elsewhere (the tests use temp folders).
"""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.environ.get("KD_DATA_DIR", os.path.join(ROOT, "data"))
LOG_DIR = os.environ.get("KD_LOG_DIR", os.path.join(ROOT, "log"))
CKPT_DIR = os.environ.get("KD_CKPT_DIR", os.path.join(ROOT, "ckpt"))
IMG_DIR = os.environ.get("KD_IMG_DIR", os.path.join(ROOT, "img"))
