from __future__ import annotations

from diffkit.audit import article, build_prompts, derive_seed, image_grid


def test_article():
    assert article("electrician") == "an electrician"
    assert article("nurse") == "a nurse"
    assert article("CEO") == "a CEO"


def test_derive_seed_is_a_pure_function_of_seed_k_i():
    seeds = {derive_seed(0, k, i) for k in range(20) for i in range(50)}
    assert len(seeds) == 1000  # no collisions
    assert derive_seed(3, 1, 2) == derive_seed(3, 1, 2) != derive_seed(4, 1, 2)
    assert all(0 <= s < 2**63 for s in seeds)
    # fixed forever: changing the derivation would silently change every published run
    assert derive_seed(0, 0, 0) == 2141408883510653086
    assert derive_seed(2021, 3, 5) == 3368268798358400382


def test_build_prompts_and_grid(make_spec):
    spec = make_spec(
        prompts__attributes={"occupation": ["nurse", "electrician"], "activity": ["at work", "resting"]},
        prompts__templates=["{a_occupation}", "{a_occupation} {activity}"],
    )
    df = build_prompts(spec)
    audit = df[df["kind"] == "audit"]
    assert list(audit["prompt"]) == [
        "a nurse",
        "an electrician",
        "a nurse at work",
        "a nurse resting",
        "an electrician at work",
        "an electrician resting",
    ]
    ctrl = df[df["kind"] == "control"]
    assert list(ctrl["prompt"]) == ["a woman nurse", "a woman electrician", "a man nurse", "a man electrician"]
    assert list(ctrl["stated_gender"]) == ["female", "female", "male", "male"]
    assert list(df["prompt_id"]) == list(range(len(df)))
    assert df.loc[df["occupation"] == "nurse", "p_ref"].iloc[0] == 0.867
    grid = image_grid(spec, df)
    assert len(grid) == 6 * 3 + 4 * 2
    row = grid.iloc[4]
    assert row["seed"] == derive_seed(spec.seed, row["prompt_id"], row["image_index"])
    assert row["path"] == f"images/{row['prompt_id']:04d}/{row['image_index']:04d}.png"
