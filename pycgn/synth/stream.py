"""Benchmarks on the fly and on disk: ``CounterfactualStream`` and ``BenchmarkSplit``.

``CounterfactualStream`` yields exactly the samples ``pycgn benchmark make`` writes for a design
and seed (same backend, same bits): sample ``i`` of split ``s`` depends only on
``(seed, s, i)``. Under a DataLoader with workers, worker ``w`` of ``W`` makes the blocks of
``batch_size`` consecutive indices ``w, w + W, w + 2W, ...``: every index once, none twice.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .dataset import SynthDataset


def _labels(draw_arrays: dict, j: int, label: str) -> dict:
    out = {k: int(draw_arrays[k][j]) for k in ("index", "shape", "texture", "bg")}
    out["label"] = out[label]
    return out


class CounterfactualStream(IterableDataset):
    """``n`` samples ``(image uint8 (3, H, W), labels)`` of ``design`` made on the fly.

    ``labels`` holds ``index``, ``shape``, ``texture``, ``bg`` and ``label`` (the class of the
    design's label mechanism). ``split``: the benchmark split whose samples to make (its seed is
    ``split_seed(seed, split)``); None uses ``seed`` itself (``pycgn synth --design`` with that
    seed). ``backend`` and ``precision`` must be the benchmark's (``from_benchmark`` reads them) for
    the same bits.
    """

    def __init__(self, design, n: int, seed: int = 0, split: str | None = None, model="colored_mnist",
                 backend: str = "torch", device: str = "cpu", batch_size: int = 256, transform=None,
                 precision: str = "float32"):
        from .. import _checks
        from ..sampler import Sampler
        from .design import parse_design, split_seed
        self.n = _checks.count("n", n)
        self.batch_size = _checks.count("batch_size", batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        Sampler(seed)  # checks the seed
        self.seed = split_seed(seed, split) if split is not None else int(seed)
        self.design = parse_design(design)
        self.model, self.backend, self.device, self.transform = model, backend, device, transform
        self.precision = _checks.precision(precision, device)
        self._gen = None
        if backend == "auto":
            raise ValueError("backend: give the benchmark's backend (auto may choose another per batch size, "
                             "and backends differ in the last bits)")

    @classmethod
    def from_benchmark(cls, root, split: str, model=None, device: str = "cpu", batch_size: int = 256,
                       transform=None) -> "CounterfactualStream":
        """The stream of a benchmark's split, as ``pycgn benchmark make`` wrote it."""
        from .benchmark import read_datasheet, split_manifest
        sheet, m = read_datasheet(root), split_manifest(root, split)
        return cls(m["design"], m["n"], sheet["seed"], split, model or sheet["model"]["source"], m["backend"],
                   device, batch_size, transform, m.get("precision", "float32"))

    def __len__(self) -> int:
        return self.n

    def _generator(self):
        if self._gen is None:  # made in each worker process, not pickled
            from ..api import Generator
            self._gen = Generator(self.model, self.backend, self.device, precision=self.precision)
            self.design = self.design.resolve(self._gen)
        return self._gen

    def blocks(self, worker: int = 0, workers: int = 1):
        """(start, count) of the blocks of worker ``worker`` of ``workers``."""
        for b in range(worker, -(-self.n // self.batch_size), workers):
            start = b * self.batch_size
            yield start, min(self.batch_size, self.n - start)

    def __iter__(self):
        from .design import DesignSampler
        from .engines import _Buffer, _fill
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        gen = self._generator()
        sampler = DesignSampler(gen.sampler(self.seed), self.design, self.seed)
        m = gen.model
        buf = _Buffer(min(self.batch_size, self.n), m.image_size, m.latent_dim)
        for start, count in self.blocks(worker, workers):
            _fill(gen, sampler, buf, start, count, self.batch_size)  # the offline path, bit for bit
            arrays = buf.view(count)
            for j in range(count):
                image = torch.from_numpy(np.array(arrays["images"][j])).permute(2, 0, 1)
                if self.transform is not None:
                    image = self.transform(image)
                yield image, _labels(arrays, j, self.design.label)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_gen"] = None
        return state


class BenchmarkSplit(SynthDataset):
    """One split of a benchmark folder: ``SynthDataset`` whose labels add ``label`` (the class of the
    design's label mechanism) beside ``shape``, ``texture`` and ``bg``."""

    def __init__(self, root, split: str, verify: bool = True, transform=None):
        from .design import check_split_name
        from pathlib import Path
        super().__init__(Path(root) / check_split_name(split), verify=verify, transform=transform)
        design = self.manifest.get("design")
        if not design:
            raise ValueError(f"{self.root}: not a benchmark split (its manifest has no design)")
        self.label = design["label"]

    def __getitem__(self, i):
        image, labels = super().__getitem__(i)
        labels["label"] = labels[self.label]
        return image, labels
