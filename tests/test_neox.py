"""The Pythia-style model computes what GPT-NeoX computes with the same weights.

Hugging Face's GPTNeoXForCausalLM is built from a config with random weights (no download),
our weights are copied in by name, and the logits must agree: partial rotate-half RoPE,
parallel residual, exact GELU, untied head, NeoX's per-head q/k/v packing.
"""
import pytest
import torch

from kernels import interpreting
from model import GPT, GPTConfig

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("parallel,attn", [(True, "sdpa"), (False, "sdpa"), (True, "triton")])
def test_logits_match_hugging_face_gpt_neox(parallel, attn):
    # attn="triton": the Triton kernel (under the interpreter on CPU, tests/conftest.py).
    if attn == "triton":
        pytest.importorskip("triton")
        if not interpreting():
            pytest.skip("the triton backend takes these CPU tensors only under TRITON_INTERPRET=1")
    torch.manual_seed(0)
    ours = GPT(GPTConfig(vocab_size=512, n_layer=3, n_head=4, n_embd=128, rotary_pct=0.25,
                         parallel_residual=parallel, attn=attn)).eval()
    hf = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        vocab_size=512, hidden_size=128, num_hidden_layers=3, num_attention_heads=4, intermediate_size=512,
        rotary_pct=0.25, rotary_emb_base=10000, max_position_embeddings=4096, use_parallel_residual=parallel,
        hidden_act="gelu", layer_norm_eps=1e-5, tie_word_embeddings=False)).eval()
    names = {"embed_out.weight": "lm_head.weight"}
    state = {names.get(k, k if k.startswith("embed_out") else "gpt_neox." + k): v
             for k, v in ours.state_dict().items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and not [m for m in missing if "rotary" not in m and "masked_bias" not in m]
    idx = torch.randint(0, 512, (2, 300))
    with torch.no_grad():
        ours_logits, hf_logits = ours(idx)[0], hf(idx).logits
    assert ours_logits.abs().max() > 0.1                     # not trivially zero
    assert torch.allclose(ours_logits, hf_logits, atol=1e-5), (ours_logits - hf_logits).abs().max()
