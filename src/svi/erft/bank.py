"""Error replay memory: errors binned by timestep (SVI_SPEC section 3, step 7).

One :class:`ErrorBank` holds errors of one kind (noise or video). Bins are the N
inference sigmas; an error made at training sigma ``s`` goes to the nearest bin.
When a bin is full, a new error replaces a stored one: ``"l2"`` the nearest in L2
(the released default; keeps the bin diverse), ``"random"`` or ``"fifo"``.

Memory. Entries are allocated only as they arrive, stored in ``storage_dtype``
(bfloat16 by default: half of fp32), optionally average-pooled ``spatial_pool``x
over (h, w) and expanded back (nearest) when sampled. ``max_bytes`` caps the whole
bank: the per-bin capacity becomes ``min(capacity, max_bytes // (bins * entry_bytes))``
once the entry shape is known, and a log line says so. At Wan 2.1 480p (one error =
16 x 21 x 60 x 104 values), 2 banks x 50 bins x 500 entries need 210 GB in bf16 -
the reference's figure; ``spatial_pool=2`` needs 52 GB, and ``max_bytes`` bounds it.

The bank is checkpointable: :meth:`state_dict` holds only tensors (safetensors),
including its RNG, so a resumed run samples exactly what it would have sampled.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)

REPLACEMENTS = ("l2", "random", "fifo")


@dataclass
class BinStats:
    sigma: float
    count: int
    mean_norm: float  # RMS of the stored errors (in stored precision)


class ErrorBank:
    def __init__(
        self,
        bin_sigmas: Tensor,
        capacity: int = 500,
        replacement: str = "l2",
        storage_dtype: torch.dtype = torch.bfloat16,
        max_bytes: int | None = None,
        spatial_pool: int = 1,
        seed: int = 0,
    ) -> None:
        if replacement not in REPLACEMENTS:
            raise ValueError(f"replacement must be one of {REPLACEMENTS}, got {replacement!r}")
        if capacity < 1 or spatial_pool < 1:
            raise ValueError("capacity and spatial_pool must be >= 1")
        self.bin_sigmas = torch.as_tensor(bin_sigmas, dtype=torch.float32).flatten()
        self.capacity = capacity
        self.replacement = replacement
        self.storage_dtype = storage_dtype
        self.max_bytes = max_bytes
        self.spatial_pool = spatial_pool
        self.generator = torch.Generator().manual_seed(seed)
        self.shape: tuple[int, ...] | None = None  # shape of one error as given to add()
        self._store: list[Tensor] = [torch.empty(0) for _ in range(self.num_bins)]
        self._count = torch.zeros(self.num_bins, dtype=torch.long)
        self._next = torch.zeros(self.num_bins, dtype=torch.long)  # fifo pointer per bin

    # -- geometry ------------------------------------------------------------------
    @property
    def num_bins(self) -> int:
        return int(self.bin_sigmas.numel())

    def bin_of(self, sigma: Tensor | float) -> Tensor:
        """Index of the nearest bin sigma, elementwise (a long CPU tensor; any device in)."""
        s = torch.as_tensor(sigma).detach().to("cpu", torch.float32)
        return (s.reshape(-1, 1) - self.bin_sigmas).abs().argmin(dim=1).reshape(s.shape)

    def _stored_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.spatial_pool == 1:
            return shape
        *lead, h, w = shape
        if h % self.spatial_pool or w % self.spatial_pool:
            raise ValueError(f"error of shape {shape} is not divisible by pool {self.spatial_pool}")
        return (*lead, h // self.spatial_pool, w // self.spatial_pool)

    def entry_bytes(self, shape: tuple[int, ...] | None = None) -> int:
        shape = shape or self.shape
        if shape is None:
            return 0
        numel = math.prod(self._stored_shape(tuple(shape)))
        return numel * torch.empty((), dtype=self.storage_dtype).element_size()

    def _init_shape(self, shape: tuple[int, ...]) -> None:
        self._stored_shape(shape)  # raises now, not at the first sample, if h, w % pool
        self.shape = shape
        if self.max_bytes is not None:
            fit = self.max_bytes // max(1, self.num_bins * self.entry_bytes())
            if fit < 1:
                raise ValueError(f"max_bytes={self.max_bytes} cannot hold one error per bin")
            if fit < self.capacity:
                log.info("error bank: capacity %d -> %d per bin to stay within %d bytes",
                         self.capacity, fit, self.max_bytes)  # fmt: skip
                self.capacity = int(fit)

    # -- storing -------------------------------------------------------------------
    def _pack(self, error: Tensor) -> Tensor:
        e = error.detach().to("cpu", torch.float32)  # banks live in CPU RAM
        if self.spatial_pool > 1:
            *lead, h, w = e.shape
            e = F.avg_pool2d(e.reshape(-1, 1, h, w), self.spatial_pool).reshape(
                *lead, h // self.spatial_pool, w // self.spatial_pool
            )
        return e.to(self.storage_dtype).flatten()

    def _unpack(self, flat: Tensor) -> Tensor:
        assert self.shape is not None
        # copy=True: with float32 storage .float() would return a view of the bank
        e = flat.to(torch.float32, copy=True).reshape(self._stored_shape(self.shape))
        if self.spatial_pool > 1:
            e = e.repeat_interleave(self.spatial_pool, -2).repeat_interleave(self.spatial_pool, -1)
        return e

    @torch.no_grad()
    def add(self, errors: Tensor, sigmas: Tensor | float) -> None:
        """Bank a batch of errors (B, ...) made at training sigmas (B,)."""
        sig = torch.as_tensor(sigmas, dtype=torch.float32).reshape(-1)
        if sig.numel() == 1 and errors.shape[0] > 1:
            sig = sig.expand(errors.shape[0])
        if self.shape is None:
            self._init_shape(tuple(errors.shape[1:]))
        elif tuple(errors.shape[1:]) != self.shape:
            raise ValueError(f"error shape {tuple(errors.shape[1:])} != bank shape {self.shape}")
        for error, b in zip(errors, self.bin_of(sig).tolist(), strict=True):
            self._add_one(self._pack(error), b)

    def _add_one(self, flat: Tensor, b: int) -> None:
        n = int(self._count[b])
        if n < self.capacity:
            store = self._store[b]
            if store.shape[0] <= n:  # grow geometrically, never past capacity
                new = torch.empty(min(self.capacity, max(4, 2 * n)), flat.numel(),
                                  dtype=self.storage_dtype)  # fmt: skip
                if n:  # an empty bin's store is a 1-d empty(0): nothing to copy
                    new[:n] = store[:n]
                self._store[b] = store = new
            store[n] = flat
            self._count[b] = n + 1
            return
        store = self._store[b]
        if self.replacement == "l2":
            idx = int(self._sq_dists(store[:n], flat).argmin())
        elif self.replacement == "random":
            idx = int(torch.randint(0, n, (), generator=self.generator))
        else:
            idx = int(self._next[b])
            self._next[b] = (idx + 1) % self.capacity
        store[idx] = flat

    @staticmethod
    def _sq_dists(store: Tensor, flat: Tensor, chunk_bytes: int = 1 << 26) -> Tensor:
        """Squared L2 distances of ``flat`` to every row of ``store``, exact, in fp32 chunks.

        Not ``torch.cdist``: beyond 25 rows it uses ``|a|^2 + |b|^2 - 2ab``, which cancels
        catastrophically for near-identical errors (it picked the wrong neighbour in a
        test), and it needs an fp32 copy of the whole bin (4 GB at Wan 480p, Z = 500).
        """
        q = flat.float()
        rows = max(1, chunk_bytes // max(1, 4 * q.numel()))
        return torch.cat(
            [(store[i : i + rows].float() - q).pow(2).sum(1) for i in range(0, len(store), rows)]
        )

    # -- sampling ------------------------------------------------------------------
    def sample(self, sigma: float | Tensor) -> Tensor | None:
        """A stored error of the bin of ``sigma``, uniformly; None if that bin is empty."""
        b = int(self.bin_of(torch.as_tensor(sigma, dtype=torch.float32).reshape(())))
        n = int(self._count[b])
        if n == 0:
            return None
        idx = int(torch.randint(0, n, (), generator=self.generator))
        return self._unpack(self._store[b][idx])

    def sample_pooled(self, max_sigma: float | None = None) -> Tensor | None:
        """A stored error drawn uniformly over ALL entries of all bins - or of the bins
        whose sigma is at most ``max_sigma`` - None if those are empty."""
        counts = self._count
        if max_sigma is not None:
            counts = torch.where(self.bin_sigmas <= max_sigma, counts, torch.zeros_like(counts))
        total = int(counts.sum())
        if total == 0:
            return None
        k = int(torch.randint(0, total, (), generator=self.generator))
        cum = torch.cumsum(counts, 0)
        b = int(torch.searchsorted(cum, torch.tensor(k), right=True))
        idx = k - (int(cum[b - 1]) if b > 0 else 0)
        return self._unpack(self._store[b][idx])

    # -- bookkeeping ---------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._count.sum())

    @property
    def nbytes(self) -> int:
        """Bytes held by stored entries (allocated slack of growing bins included)."""
        return sum(s.numel() * s.element_size() for s in self._store)

    def stats(self) -> list[BinStats]:
        out = []
        for b in range(self.num_bins):
            n = int(self._count[b])
            norm = float(self._store[b][:n].float().pow(2).mean().sqrt()) if n else 0.0
            out.append(BinStats(float(self.bin_sigmas[b]), n, norm))
        return out

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only (safetensors-friendly): bins, counts, pointers, shape, RNG, entries."""
        sd = {
            "bin_sigmas": self.bin_sigmas.clone(),
            "count": self._count.clone(),
            "next": self._next.clone(),
            "capacity": torch.tensor(self.capacity),
            "shape": torch.tensor(self.shape or (), dtype=torch.long),
            "generator": self.generator.get_state(),
        }
        for b in range(self.num_bins):
            n = int(self._count[b])
            if n:
                sd[f"bin.{b}"] = self._store[b][:n].clone()
        return sd

    def load_state_dict(self, sd: dict[str, Tensor]) -> None:
        if not torch.equal(sd["bin_sigmas"], self.bin_sigmas):
            raise ValueError("error bank state has different bins")
        self._count = sd["count"].clone()
        self._next = sd["next"].clone()
        self.capacity = int(sd["capacity"])
        shape = tuple(int(x) for x in sd["shape"].tolist())
        self.shape = shape or None
        self.generator.set_state(sd["generator"])
        for b in range(self.num_bins):
            entries = sd.get(f"bin.{b}")
            self._store[b] = (
                torch.empty(0) if entries is None else entries.to(self.storage_dtype).clone()
            )
