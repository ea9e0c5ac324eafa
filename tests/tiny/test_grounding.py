"""Token grounding (TokenCompose's token loss) for diffkit-tiny 2's polish stage."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from diffkit.tiny import data as D
from diffkit.tiny import grounding as G
from diffkit.tiny import models as M
from diffkit.tiny import recipe as R
from diffkit.tiny import unet_stage as U
from diffkit.tiny import world as W
from diffkit.tiny.cache import cache_draws


@pytest.fixture(scope="module")
def tok():
    return M.build_tokenizer()


def _words(tok, caption, positions):
    ids = tok(caption).input_ids
    return [tok.decode([ids[p] for p in pos]).strip() for pos in positions]


def test_word_objects_finds_each_phrase_words_and_their_object(tok):
    shape = W.Attributes("shape", color="red", shape="circle")
    got = G.word_objects(tok, "a photo of a red circle", shape)
    assert [k for _, k in got] == [0, 0]
    assert _words(tok, "a photo of a red circle", [p for p, _ in got]) == ["red", "circle"]

    pair = W.Attributes("pair", color="red", shape="circle", color2="blue", shape2="circle")
    cap = "a blue circle and a red circle"  # the second object named first, the same shape word twice
    got = G.word_objects(tok, cap, pair)
    assert [k for _, k in got] == [0, 0, 1, 1]
    ids = tok(cap).input_ids
    (red, c0), (blue, c1) = [p for p, _ in got[:2]], [p for p, _ in got[2:]]
    assert _words(tok, cap, [red, c0, blue, c1]) == ["red", "circle", "blue", "circle"]
    assert c0[0] > red[0] > c1[0] > blue[0]  # each shape word is its own phrase's, not the first "circle"
    assert len(ids) == 9  # start, seven words, end

    orange = W.Attributes("shape", color="orange", shape="square")  # "an orange square"
    got = G.word_objects(tok, "an orange square", orange)
    assert _words(tok, "an orange square", [p for p, _ in got]) == ["orange", "square"]


def test_word_objects_grounds_nothing_for_people_and_the_empty_caption(tok):
    person = W.Attributes("person", occupation="nurse", gender="woman")
    assert G.word_objects(tok, "a woman nurse", person) == []
    assert G.word_objects(tok, "", W.Attributes("shape", color="red", shape="circle")) == []
    with pytest.raises(ValueError, match="'a red circle' is not among the token ids"):
        G.word_objects(tok, "a blue square", W.Attributes("shape", color="red", shape="circle"))


def _loop_loss(maps, words, objects, keep):
    """The token loss written out word by word, layer by layer."""
    per_layer = []
    for p in maps:
        n = p.shape[1]
        side = int(n**0.5)
        terms = []
        for b, ws in enumerate(words):
            if not keep[b]:
                continue
            for pos, k in ws:
                a = p[b, :, pos].sum(-1)
                m = F.avg_pool2d(objects[b : b + 1, k : k + 1], objects.shape[-1] // side).flatten()
                terms.append((1 - (a * m).sum() / a.sum()) ** 2)
        per_layer.append(torch.stack(terms).mean())
    return torch.stack(per_layer).mean()


def test_token_loss_equals_the_word_by_word_formula():
    g = torch.Generator().manual_seed(0)
    maps = [torch.rand(3, 16 * 16, 10, generator=g).softmax(-1), torch.rand(3, 4 * 4, 10, generator=g).softmax(-1)]
    objects = torch.rand(3, 2, 16, 16, generator=g)
    words = [[([2], 0), ([3, 4], 0)], [], [([1], 0), ([5], 1), ([6], 1)]]
    keep = torch.tensor([True, True, True])
    got = G.token_loss(maps, words, objects, keep)
    torch.testing.assert_close(got, _loop_loss(maps, words, objects, keep), rtol=1e-5, atol=1e-7)
    keep = torch.tensor([False, True, True])
    torch.testing.assert_close(
        G.token_loss(maps, words, objects, keep), _loop_loss(maps, words, objects, keep), rtol=1e-5, atol=1e-7
    )
    assert G.token_loss(maps, [[], [], []], objects) is None


def test_token_loss_is_zero_when_every_word_attends_only_to_its_object_and_one_when_only_outside():
    obj = torch.zeros(1, 2, 4, 4)
    obj[0, 0, :2, :2] = 1.0
    inside = torch.zeros(1, 16, 3)
    inside[0, :, 0] = 1.0  # token 0 takes the rest of the mass everywhere
    inside[0, [0, 1, 4, 5], 0] = 0.0
    inside[0, [0, 1, 4, 5], 1] = 1.0  # token 1 only on the object's four pixels
    assert float(G.token_loss([inside], [[([1], 0)]], obj)) == 0.0
    outside = torch.zeros(1, 16, 3)
    outside[0, :, 1] = 1.0
    outside[0, [0, 1, 4, 5], 1] = 0.0
    outside[0, [0, 1, 4, 5], 2] = 1.0
    assert float(G.token_loss([outside], [[([1], 0)]], obj)) == 1.0


def test_object_masks_are_the_cache_figure_masks_split_per_object():
    """Redrawn with layers, the objects' union is exactly the cache's figure mask rule."""
    recipe = dataclasses.replace(R.TINY2, cache=R.CacheConfig(per_cell=1, pairs=5))
    masks = G.object_masks(cache_draws(recipe, layers=True), factor=8)
    draws = list(cache_draws(recipe))
    cells = [D.cell_atts(a, ims) for a, ims in draws]
    ref = torch.cat([D.latent_masks(ims, atts, factor=8) for (_, ims), atts in zip(draws, cells)])
    atts = [b for c in cells for b in c]
    assert masks.shape == (len(atts), 2, 16, 16) and masks.dtype == torch.float16
    union = F.max_pool2d((masks.float().sum(1, keepdim=True) > 0).float(), 3, stride=1, padding=1)
    for i, a in enumerate(atts):
        if a.kind == "person":
            assert masks[i].sum() == 0  # occupation words also set the background: not grounded
        else:
            assert torch.equal(union[i], ref[i].float()), a
        if a.kind == "pair":  # two objects, apart
            assert masks[i, 0].sum() > 0 and masks[i, 1].sum() > 0
            assert ((masks[i, 0] > 0) & (masks[i, 1] > 0)).sum() <= 2  # they may share a boundary latent pixel
        elif a.kind == "shape":
            assert masks[i, 1].sum() == 0


def test_probe_records_differentiable_maps_and_leaves_the_unet_output_unchanged():
    from diffkit.testing import tiny_random_pipeline

    unet = tiny_random_pipeline("sd").unet
    x, hs = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 32)
    with torch.no_grad():
        ref = unet(x, 10, encoder_hidden_states=hs).sample
    before = dict(unet.attn_processors)
    probe = G.GroundingProbe(unet)
    out = unet(x, 10, encoder_hidden_states=hs).sample
    assert probe.pop() == []  # inactive: records nothing
    probe.active = True
    out = unet(x, 10, encoder_hidden_states=hs).sample
    maps = probe.pop()
    assert torch.equal(out.detach(), ref)
    assert len(maps) == 6 and all(m.requires_grad and m.shape[0] == 2 and m.shape[-1] == 77 for m in maps)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones_like(maps[0].sum(-1)))
    objects = torch.zeros(2, 2, 8, 8)
    objects[:, 0, :4, :4] = 1
    loss = G.token_loss(maps, [[([1], 0)], [([2], 0)]], objects)
    loss.backward()
    q = [m for n, m in unet.named_modules() if n.endswith("attn2")][0].to_q.weight
    assert q.grad is not None and q.grad.abs().sum() > 0
    probe.remove()
    assert {k: type(v) for k, v in unet.attn_processors.items()} == {k: type(v) for k, v in before.items()}


def test_polish_needs_the_unet_stage_export(tmp_path):
    with pytest.raises(RuntimeError, match="finish `--stage unet` before `--stage polish`"):
        U.polish_base(R.TINY2, tmp_path)
    no_polish = dataclasses.replace(R.TINY2, polish=dataclasses.replace(R.TINY2.polish, steps=0))
    with pytest.raises(ValueError, match="no polish stage"):
        U.train_polish(no_polish, tmp_path, resume=False)


def test_draw_timesteps_is_uniform_unless_the_recipe_asks_for_low_noise_steps():
    plain = torch.randint(0, 1000, (4000,), generator=torch.Generator().manual_seed(3))
    same = U.draw_timesteps(R.TINY2.unet, 4000, 1000, torch.Generator().manual_seed(3))
    assert torch.equal(plain, same)  # the unet stage's stream is unchanged
    t = U.draw_timesteps(R.TINY2.polish, 4000, 1000, torch.Generator().manual_seed(3))
    assert int(t.min()) >= 0 and int(t.max()) < 1000
    # half from [0, 200), half uniform (a fifth of which also lands there): 0.5 + 0.5·0.2 = 0.6
    assert abs(float((t < 200).float().mean()) - 0.6) < 0.03
