"""pbrl's attention backends outside their prefix-sharing layouts (left padding, decoding with a KV cache) give
HF sdpa's numbers: HF builds their masks as for sdpa, and such calls go through HF's own sdpa path."""

import pytest
import torch

from pbrl.llm.models import TinyLMConfig, build_model

IDS = torch.tensor([[0, 0, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6]])
MASK = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])


def _model(backend: str):
    return build_model(TinyLMConfig(vocab_size=50), backend=backend, dtype=torch.float64, seed=0).eval()


@pytest.mark.parametrize("backend", ["sdpa", "varlen"])
def test_left_padded_forward_and_cached_decode_equal_hf_sdpa(backend):
    ref, model = _model("hf_sdpa"), _model(backend)
    with torch.no_grad():
        a = model(input_ids=IDS, attention_mask=MASK).logits
        b = ref(input_ids=IDS, attention_mask=MASK).logits
    torch.testing.assert_close(a[MASK.bool()], b[MASK.bool()], rtol=1e-10, atol=1e-10)
    kw = dict(attention_mask=MASK, max_new_tokens=6, do_sample=False, pad_token_id=0, output_scores=True,
              return_dict_in_generate=True)
    ga, gb = model.generate(input_ids=IDS, **kw), ref.generate(input_ids=IDS, **kw)
    for sa, sb in zip(ga.scores, gb.scores):  # every decode step's logits, from the cache
        torch.testing.assert_close(sa, sb, rtol=1e-10, atol=1e-10)
