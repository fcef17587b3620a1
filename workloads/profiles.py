"""Model and device profiles: what a page weighs, what prefill costs, what the disk costs.

Compute is modelled, not run: a :class:`ModelProfile` turns prompt tokens into prefill seconds on a named
accelerator, from the common estimate of ``2 * params`` FLOPs per token at an assumed model-FLOPs
utilisation (MFU). It ignores attention's quadratic term, which is small next to the MLPs at these
prompt lengths for 7-9 B models. A :class:`DeviceProfile` prices the store's own I/O counters for the
replay engine's ``counters`` clock.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from store import KVLayout


@dataclass(frozen=True)
class Accelerator:
    """An accelerator as the replay engine models it (an assumption, with its ``source``)."""

    name: str
    peak_flops: float
    host_to_device_bytes_per_s: float
    source: str


H100_SXM = Accelerator(
    name="NVIDIA H100 SXM5 80GB",
    peak_flops=989e12,
    host_to_device_bytes_per_s=50e9,
    source=(
        "peak: 989 TFLOP/s dense BF16 tensor-core throughput from NVIDIA's H100 datasheet; host-to-device: "
        "assumed 50 GB/s, ~80% of PCIe 5.0 x16's 63 GB/s per direction"
    ),
)

DEFAULT_MFU = 0.5
"""Assumed model-FLOPs utilisation of a large-batch prefill (SGLang and vLLM report 40-60% on H100)."""


@dataclass(frozen=True)
class ModelProfile:
    """A model's KV shape and its modelled prefill speed.

    ``params`` (of the full model) sets the modelled compute; ``scale`` records by how much
    :meth:`scaled` shrank the KV tensors, which never changes the compute.
    """

    name: str
    layers: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype
    params: float
    accelerator: Accelerator = H100_SXM
    mfu: float = DEFAULT_MFU
    scale: int = 1
    source: str = ""

    def __post_init__(self) -> None:
        self.kv_layout()  # validates the shape and dtype
        if not self.params > 0 or not 0 < self.mfu <= 1:
            raise ValueError(
                f"profile {self.name}: params must be > 0 and mfu in (0, 1], got "
                f"params={self.params}, mfu={self.mfu}"
            )

    def kv_layout(self) -> KVLayout:
        return KVLayout(self.layers, self.kv_heads, self.head_dim, self.dtype)

    @property
    def kv_bytes_per_token(self) -> int:
        """``layers * 2 (K and V) * kv_heads * head_dim * bytes per element``."""
        return self.kv_layout().bytes_per_token

    @property
    def prefill_tokens_per_s(self) -> float:
        """Modelled prefill throughput: ``mfu * peak_flops / (2 * params)``."""
        return self.mfu * self.accelerator.peak_flops / (2.0 * self.params)

    def prefill_seconds(self, tokens: int) -> float:
        return tokens / self.prefill_tokens_per_s

    def host_to_device_seconds(self, nbytes: int) -> float:
        return nbytes / self.accelerator.host_to_device_bytes_per_s

    def scaled(self, factor: int) -> ModelProfile:
        """The same model with KV tensors ``factor`` times smaller (fewer KV heads, then layers, then
        head dims), for local runs; the modelled compute is unchanged."""
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(f"scale factor must be an int >= 1, got {factor!r}")
        dims = {"kv_heads": self.kv_heads, "layers": self.layers, "head_dim": self.head_dim}
        remaining = factor
        for name, value in dims.items():
            shrink = math.gcd(remaining, value)
            dims[name] = value // shrink
            remaining //= shrink
        if remaining != 1:
            total = self.layers * self.kv_heads * self.head_dim
            raise ValueError(
                f"{self.name} cannot be scaled by {factor}: the factor must divide "
                f"layers * kv_heads * head_dim = {total}; try a power of two"
            )
        if factor == 1:
            return self
        return dataclasses.replace(
            self,
            name=f"{self.name}/x{factor}",
            scale=self.scale * factor,
            layers=dims["layers"],
            kv_heads=dims["kv_heads"],
            head_dim=dims["head_dim"],
        )

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            **self.kv_layout().describe(),
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "params": self.params,
            "accelerator": self.accelerator.name,
            "mfu": self.mfu,
            "prefill_tokens_per_s": self.prefill_tokens_per_s,
            "host_to_device_bytes_per_s": self.accelerator.host_to_device_bytes_per_s,
            "scale": self.scale,
            "assumptions": self.accelerator.source,
        }


MODEL_PROFILES: dict[str, ModelProfile] = {
    profile.name: profile
    for profile in (
        ModelProfile(
            "llama-3.1-8b",
            32,
            8,
            128,
            torch.bfloat16,
            8.03e9,
            source="meta-llama/Llama-3.1-8B config.json: 32 layers, 8 KV heads, head dim 4096/32",
        ),
        ModelProfile(
            "qwen2.5-7b",
            28,
            4,
            128,
            torch.bfloat16,
            7.61e9,
            source="Qwen/Qwen2.5-7B config.json: 28 layers, 4 KV heads, head dim 3584/28",
        ),
        ModelProfile(
            "glm-4-9b",
            40,
            2,
            128,
            torch.bfloat16,
            9.40e9,
            source="THUDM/glm-4-9b config.json: 40 layers, multi_query_group_num 2, kv_channels 128",
        ),
        ModelProfile(
            "tiny",
            2,
            2,
            16,
            torch.float16,
            1.0e9,
            source="a toy shape for tests (256 B of KV per token) with the compute of a 1 B model",
        ),
    )
}


def get_profile(name: str, scale: int = 1) -> ModelProfile:
    """The preset ``name``, scaled down by ``scale``; unknown names list the valid ones."""
    if name not in MODEL_PROFILES:
        raise ValueError(f"unknown model profile {name!r}; valid profiles: {', '.join(MODEL_PROFILES)}")
    return MODEL_PROFILES[name].scaled(scale)


@dataclass(frozen=True)
class DeviceProfile:
    """What the ``counters`` clock charges for the store's I/O counters (stated, with its ``source``)."""

    name: str
    write_bytes_per_s: float
    read_bytes_per_s: float
    op_latency_s: float
    source: str

    def __post_init__(self) -> None:
        if not (self.write_bytes_per_s > 0 and self.read_bytes_per_s > 0 and self.op_latency_s >= 0):
            raise ValueError(f"device profile {self.name}: bandwidths must be > 0 and op latency >= 0")

    def io_seconds(self, write_bytes: int, read_bytes: int, ops: int, stall_s: float) -> float:
        """Device time of a window: transfer at the stated bandwidths, a latency per operation, plus the
        time the store itself reports its writes were stalled."""
        return (
            write_bytes / self.write_bytes_per_s
            + read_bytes / self.read_bytes_per_s
            + ops * self.op_latency_s
            + stall_s
        )


THIS_MACHINE = DeviceProfile(
    name="this-machine",
    write_bytes_per_s=308e6,
    read_bytes_per_s=546e6,
    op_latency_s=33e-6,
    source=(
        "the project's machine (2 vCPU VM, virtio disk /dev/vda), 2026-11: write 308 MB/s sequential with "
        "fdatasync (DESIGN.md); read 546 MB/s with dd bs=1M iflag=direct over a 256 MiB file; op latency "
        "33 us, one 4 KiB O_DIRECT read (dd bs=4k iflag=direct, 20,000 reads in 0.66 s)"
    ),
)

NVME_PCIE4 = DeviceProfile(
    name="nvme-pcie4",
    write_bytes_per_s=5.0e9,
    read_bytes_per_s=7.0e9,
    op_latency_s=80e-6,
    source=(
        "an assumed datacenter PCIe 4.0 NVMe SSD of the class LLM servers spill KV to: 7.0 GB/s sequential "
        "read and 5.0 GB/s sustained write (vendor datasheets of PCIe 4.0 x4 drives quote 6.5-7.4 GB/s read, "
        "5-6.9 GB/s write), 80 us per random 4 KiB read at queue depth 1"
    ),
)

DEVICE_PROFILES: dict[str, DeviceProfile] = {profile.name: profile for profile in (THIS_MACHINE, NVME_PCIE4)}


def get_device_profile(name: str) -> DeviceProfile:
    if name not in DEVICE_PROFILES:
        raise ValueError(f"unknown device profile {name!r}; valid profiles: {', '.join(DEVICE_PROFILES)}")
    return DEVICE_PROFILES[name]
