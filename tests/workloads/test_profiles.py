"""Model and device profiles: exact KV bytes, scaling that keeps compute, stated assumptions."""

from __future__ import annotations

import pytest
import torch

from store import KVLayout
from workloads import MODEL_PROFILES, THIS_MACHINE, get_device_profile, get_profile


@pytest.mark.parametrize(
    ("name", "bytes_per_token"),
    [
        ("llama-3.1-8b", 32 * 8 * 128 * 2 * 2),  # 131072
        ("qwen2.5-7b", 28 * 4 * 128 * 2 * 2),  # 57344
        ("glm-4-9b", 40 * 2 * 128 * 2 * 2),  # 40960
        ("tiny", 2 * 2 * 16 * 2 * 2),  # 256
    ],
)
def test_kv_bytes_per_token_are_exact(name: str, bytes_per_token: int) -> None:
    profile = get_profile(name)
    assert profile.kv_bytes_per_token == bytes_per_token
    assert profile.kv_layout().bytes_per_token == bytes_per_token
    assert profile.source


def test_llama_layout_and_modelled_prefill() -> None:
    llama = get_profile("llama-3.1-8b")
    assert llama.kv_bytes_per_token == 131072
    assert llama.kv_layout() == KVLayout(32, 8, 128, torch.bfloat16)
    assert llama.prefill_tokens_per_s == pytest.approx(0.5 * 989e12 / (2 * 8.03e9))
    assert llama.prefill_seconds(8192) == pytest.approx(8192 / llama.prefill_tokens_per_s)
    assert "datasheet" in llama.accelerator.source


def test_scaling_shrinks_tensors_and_keeps_compute() -> None:
    llama = get_profile("llama-3.1-8b")
    small = llama.scaled(16)
    assert (small.kv_heads, small.layers, small.head_dim) == (1, 16, 128)
    assert small.kv_bytes_per_token * 16 == llama.kv_bytes_per_token
    assert small.prefill_tokens_per_s == llama.prefill_tokens_per_s
    assert small.scale == 16 and small.name == "llama-3.1-8b/x16"
    assert (
        get_profile("glm-4-9b", 80).kv_bytes_per_token * 80 == MODEL_PROFILES["glm-4-9b"].kv_bytes_per_token
    )
    assert llama.scaled(1) is llama
    with pytest.raises(ValueError, match="must divide"):
        llama.scaled(3)
    with pytest.raises(ValueError, match="int >= 1"):
        llama.scaled(0)


def test_unknown_profiles_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"valid profiles: llama-3\.1-8b, qwen2\.5-7b, glm-4-9b, tiny"):
        get_profile("gpt-5")
    with pytest.raises(ValueError, match="valid profiles: this-machine"):
        get_device_profile("nvme")


def test_device_profile_prices_counters() -> None:
    assert get_device_profile("this-machine") is THIS_MACHINE
    assert THIS_MACHINE.write_bytes_per_s == 308e6 and "fdatasync" in THIS_MACHINE.source
    seconds = THIS_MACHINE.io_seconds(write_bytes=308_000_000, read_bytes=546_000_000, ops=1000, stall_s=0.5)
    assert seconds == pytest.approx(1.0 + 1.0 + 1000 * 33e-6 + 0.5)
