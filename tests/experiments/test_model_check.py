import pytest
import torch

pytest.importorskip("transformers")

from experiments.model_check import ModelSpec, cache_from_kv, check_prefix_reuse, kv_from_cache

TINY = ModelSpec(
    vocab_size=500, hidden_size=64, intermediate_size=128, layers=2, attention_heads=4, kv_heads=2
)


@pytest.mark.parametrize("kind", ["lsm", "file", "applog", "memory"])
def test_logits_from_stored_prefix_equal_full_recompute(kind, tmp_path):
    result = check_prefix_reuse(
        kind, tmp_path / kind, TINY, prompt_tokens=100, shared_tokens=70, page_size=16
    )
    assert result.reused_tokens == 64  # 70 shared tokens hold 4 full pages of 16
    assert result.logits_match, f"max abs diff {result.max_abs_diff}"
    assert result.max_abs_diff < 1e-5


def test_cache_round_trip_keeps_layer_and_head_order():
    from experiments.model_check import build_model

    model = build_model(TINY)
    kv = torch.randn(TINY.layers, 2, 10, TINY.kv_heads, TINY.head_dim)
    back = kv_from_cache(cache_from_kv(kv, model))
    assert torch.equal(back, kv)


def test_shared_tokens_must_fit_the_prompt(tmp_path):
    with pytest.raises(ValueError, match="shared_tokens"):
        check_prefix_reuse("memory", tmp_path, TINY, prompt_tokens=10, shared_tokens=20)
