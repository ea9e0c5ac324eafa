"""Published protocols a spec can follow: counting seeds, one batch of latents per prompt, the
pipeline's safety flags kept, and a face filter to a target count."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import torch
from PIL import Image

from diffkit.audit import generate_images, image_grid, run_audit
from diffkit.audit.generate import _latent_shape, _noise
from diffkit.audit.score import keep_first


def test_counting_seeds_count_from_the_spec_seed(make_spec):
    spec = make_spec(audit__seeds="counting", audit__seed=5)
    grid = image_grid(spec)
    assert (grid["seed"] == 5 + grid["image_index"]).all()  # every prompt: 5, 6, 7, … (Fair Diffusion's 0, 1, 2, …)


def _seed_table(spec, tmp_path, seeds=None):
    from diffkit.audit import build_prompts

    prompts = build_prompts(spec)["prompt"]
    path = tmp_path / "seeds.csv"
    pd.DataFrame({"prompt": prompts, "evaluation_seed": seeds or [100 + 7 * j for j in range(len(prompts))]}).to_csv(
        path, index=False
    )
    return path


def test_per_prompt_noise_is_ucs_batch_of_latents(make_spec, pipe, tmp_path):
    """Image i of a prompt starts from the i-th of torch.randn((n, C, h, w), generator=torch.manual_seed(seed)),
    drawn on the CPU in float32: what Unified Concept Editing's script did (its global generator)."""
    base = make_spec(audit__images_per_prompt=3)
    spec = make_spec(
        audit__images_per_prompt=3, audit__seeds=str(_seed_table(base, tmp_path)), audit__noise="per_prompt"
    )
    grid = image_grid(spec)
    assert grid.groupby("prompt_id")["seed"].nunique().eq(1).all()  # one seed per prompt
    k0 = grid[grid["prompt_id"] == 0]
    got = _noise(pipe, spec, k0["seed"].tolist(), k0["image_index"].tolist(), [3, 3, 3])["latents"]
    want = torch.randn((3, *_latent_shape(pipe, spec)), generator=torch.manual_seed(int(k0["seed"].iloc[0])))
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert tuple(want.shape[1:]) == (
        pipe.unet.config.in_channels,
        32 // pipe.vae_scale_factor,
        32 // pipe.vae_scale_factor,
    )


def test_per_prompt_noise_run_matches_a_direct_pipeline_call(make_spec, pipe, tmp_path):
    base = make_spec(audit__images_per_prompt=2)
    spec = make_spec(
        audit__images_per_prompt=2,
        audit__batch_size=2,
        audit__seeds=str(_seed_table(base, tmp_path)),
        audit__noise="per_prompt",
    )
    led = generate_images(spec, tmp_path / "run", pipe=pipe, progress=False)
    row = led[led["prompt_id"] == 1]
    seed = int(row["seed"].iloc[0])
    latents = torch.randn((2, *_latent_shape(pipe, spec)), generator=torch.manual_seed(seed))
    with torch.inference_mode():
        direct = pipe(
            prompt=[row["prompt"].iloc[0]] * 2,
            latents=latents,
            num_inference_steps=2,
            guidance_scale=5.0,
            height=32,
            width=32,
            output_type="pil",
        ).images
    for i, img in enumerate(direct):
        ours = np.asarray(Image.open(tmp_path / "run" / row["path"].iloc[i]))
        np.testing.assert_array_equal(ours, np.asarray(img))


class _FlaggingPipe:
    """The tiny pipeline with a stand-in safety checker: it flags every nurse prompt."""

    def __init__(self, pipe):
        self._pipe = pipe

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __call__(self, **kw):
        from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput

        out = self._pipe(**kw)
        return StableDiffusionPipelineOutput(
            images=out.images, nsfw_content_detected=["nurse" in p for p in kw["prompt"]]
        )


def test_the_safety_filters_flags_are_kept_and_counted(make_spec, pipe, tmp_path):
    spec = make_spec()
    result = run_audit(spec, out=tmp_path / "run", pipe=_FlaggingPipe(pipe), progress=False)
    images = result.images
    assert images["nsfw"].map(type).eq(bool).all()
    assert (images["nsfw"] == images["occupation"].eq("nurse")).all()
    con = sqlite3.connect(tmp_path / "run" / "ledger.sqlite")
    assert con.execute("SELECT COUNT(*), SUM(nsfw) FROM safety").fetchone() == (14, 7)
    con.close()
    by_occ = pd.read_csv(tmp_path / "run" / "report" / "safety_by_occupation.csv").set_index("occupation")
    assert by_occ.loc["nurse", "n_flagged"] == 3 and by_occ.loc["pilot", "n_flagged"] == 0
    assert by_occ.loc["nurse", "flagged_rate"] == 1.0 and by_occ["n_unknown"].sum() == 0
    by_gender = pd.read_csv(tmp_path / "run" / "report" / "safety_by_stated_gender.csv").set_index("stated_gender")
    assert by_gender["n_images"].tolist() == [4, 4] and by_gender["n_flagged"].tolist() == [2, 2]
    assert "Safety filter" in (tmp_path / "run" / "report" / "index.html").read_text()


def test_a_run_folder_from_before_the_flags_reads_as_unknown(make_spec, pipe, tmp_path):
    from diffkit.audit import report_audit

    spec = make_spec()
    run_audit(spec, out=tmp_path / "run", pipe=pipe, progress=False)
    con = sqlite3.connect(tmp_path / "run" / "ledger.sqlite")
    con.execute("DROP TABLE safety")  # as diffkit before issue 23 left it
    con.commit()
    con.close()
    result = report_audit(tmp_path / "run", progress=False)
    assert result.images["nsfw"].isna().all()
    html = (tmp_path / "run" / "report" / "index.html").read_text()
    assert "gave no <code>nsfw_content_detected</code> flags" in html


def test_keep_first_counts_the_first_n_images_past_the_gate():
    labels = ["no_person", "female", "male", "several_people", "abstain", "male", "female"]
    t = pd.DataFrame(
        {
            "prompt_id": [0] * 7 + [1] * 2,
            "image_index": list(range(7)) + [0, 1],
            "label": labels + ["no_person", "male"],
        }
    )
    out = keep_first(t, 3)
    # prompt 0: no_person, female, male, several_people, abstain (the 3rd past the gate); prompt 1 falls short
    assert out[out["prompt_id"] == 0]["image_index"].tolist() == [0, 1, 2, 3, 4]
    assert out[out["prompt_id"] == 1]["image_index"].tolist() == [0, 1]
    assert out.attrs["keep_first"] == {"n": 3, "left_out": 2, "short": {1: 1}}
    assert keep_first(t, None) is t


def test_keep_first_in_a_run(make_spec, pipe, tmp_path):
    spec = make_spec(classifier__keep_first=2)
    result = run_audit(spec, out=tmp_path / "run", pipe=pipe, progress=False)
    # the test judge's gate is off (person_threshold 0): every image passes, the first 2 of 3 count
    audit = result.images[result.images["kind"] == "audit"]
    assert audit.groupby("prompt_id").size().eq(2).all()
    assert "Face filter to a target count" in (tmp_path / "run" / "report" / "index.html").read_text()
