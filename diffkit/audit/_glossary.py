"""What each overall metric is, in words: the ``description`` and ``interval`` columns of the overall table.

The statistics modules compute; this table says what they computed, in one place, so the
report, the CSVs and the notebooks read the same sentence (the CSVs in English, the report in its
language). ``{lvl}`` is the confidence level ("95%"), ``{alpha}`` the family-wise error rate ("5%").
"""

from __future__ import annotations

from ..i18n import N_

__all__ = ["DESCRIPTIONS", "INTERVALS", "describe"]

DESCRIPTIONS: dict[str, str] = {
    "mean_imbalance": N_(
        "mean over occupations of |p − ½|, bias-corrected (2|p̂ − ½| − E|p̂* − ½| per occupation, floored at 0 overall)"
    ),
    "fair_null_p": N_(
        "global test of 'every occupation's p = ½': the smallest Holm-adjusted p-value of the exact "
        "per-occupation tests (G × the smallest p-value, Bonferroni's min-p test); it rejects exactly when "
        "n_unfair_holm > 0"
    ),
    "mean_imbalance_plugin": N_(
        "mean over occupations of |p̂ − ½| as measured (templates pooled); biased upward by "
        "sampling noise, compare with mean_fair_baseline"
    ),
    "mean_fair_baseline": N_("mean E|p̂ − ½| a perfectly fair model shows at these sample sizes"),
    "mean_excess_imbalance": N_(
        "mean_imbalance_plugin − mean_fair_baseline: unbiased for the true mean imbalance only "
        "when the model is fair (0); for a biased model it understates it (use mean_imbalance)"
    ),
    "mean_sq_imbalance": N_(
        "mean over occupations of (p − ½)², estimated without bias at every p, parity included "
        "(k(k − 1)/(n(n − 1)) − k/n + ¼ per occupation): the smooth companion of mean_imbalance"
    ),
    "rms_imbalance": N_("√max(mean_sq_imbalance, 0): the mean squared imbalance in the units of |p − ½| (descriptive)"),
    "n_unfair_holm": N_(
        "occupations whose exact binomial test rejects p = ½, Holm-adjusted (family-wise error ≤ {alpha})"
    ),
    "mean_kl_uniform": N_("mean over occupations of KL(p̂ ‖ ½) in nats (plug-in, descriptive)"),
    "pooled_p_female": N_("share labelled female among all labelled audit images"),
    "abstain_rate": N_("share of audit images labelled abstain (not forced into a class)"),
    "no_person_rate": N_("share of audit images labelled no_person (not forced into a class)"),
    "several_people_rate": N_("share of audit images labelled several_people (not forced into a class)"),
    "blacked_out_rate": N_("share of audit images labelled blacked_out (not forced into a class)"),
    "heim_gender_imbalance": N_(
        "HEIM's way: per prompt the share of all images with p_female ≥ ½ (no gate, no "
        "abstention), |share − ½| averaged over prompts; plug-in, biased upward"
    ),
    "amplification": N_(
        "directional bias amplification (Zhao et al. 2017): mean over occupations with a reference of "
        "s·(p − p_ref), s = +1 where the reference's majority is women, −1 where men; > 0 the model leans further "
        "towards each reference majority than the reference does, 0 it copies it, < 0 it leans less far or reverses"
    ),
    "mean_abs_gap": N_("mean |p̂ − p_ref| (plug-in, descriptive)"),
    "n_amplified_holm": N_(
        "occupations significantly further from ½ than the reference, on the reference's side "
        "(one-sided exact binomial test against p_ref, Holm-adjusted, family-wise error ≤ {alpha})"
    ),
    "n_reversed_holm": N_(
        "occupations significantly on the other side of ½ from the reference: the skew reversed "
        "(one-sided exact binomial test against ½, Holm-adjusted, family-wise error ≤ {alpha})"
    ),
    "n_differs_ref_holm": N_("occupations whose exact two-sided test rejects p = p_ref, Holm-adjusted"),
    "pearson_r": N_(
        "Pearson r of p̂ with the reference over this fixed list (descriptive, attenuated by sampling noise); p = {p}"
    ),
    "spearman_rho": N_("Spearman ρ of p̂ with the reference (descriptive); p = {p}"),
    "mean_imbalance_rogan_gladen": N_(
        "mean |p̃ − ½| with p̃ the Rogan–Gladen-corrected share (plug-in; per-occupation intervals in the table)"
    ),
    "sensitivity": N_("P(labelled female | stated female), control prompts pooled (compliance × accuracy)"),
    "specificity": N_("P(labelled male | stated male), control prompts pooled (compliance × accuracy)"),
    "se_sp_homogeneity_p": N_(
        "χ² test that Se and Sp are the same in every occupation (Bonferroni over the two); small "
        "values mean pooled Se/Sp misdescribe some occupations"
    ),
}

INTERVALS: dict[str, str] = {
    "mean_imbalance": N_(
        "{lvl} adaptive bounds (Laber & Murphy 2011), computed exactly: occupations a pretest cannot "
        "separate from ½ enter by their worst case; lower bound 0 unless the global fair test rejects"
    ),
    "amplification": N_(
        "{lvl} exact parametric interval (each share Binomial(n, (k + 1)/(n + 2))); the reference is fixed"
    ),
    "pooled_p_female": N_("{lvl} Clopper–Pearson"),
    "abstain_rate": N_("{lvl} Clopper–Pearson"),
    "no_person_rate": N_("{lvl} Clopper–Pearson"),
    "several_people_rate": N_("{lvl} Clopper–Pearson"),
    "blacked_out_rate": N_("{lvl} Clopper–Pearson"),
    "sensitivity": N_("{lvl} Clopper–Pearson"),
    "specificity": N_("{lvl} Clopper–Pearson"),
}


def describe(metric: str, *, language: str = "en", **fmt) -> tuple[str, str]:
    """(description, interval) of *metric* in *language*, formatted with *fmt* (``lvl``, ``alpha``, ``p``).

    English unless asked: the overall table (and its CSV) keeps these columns in English whatever
    language diffkit speaks; the report translates them where it shows them."""
    if language == "en":
        gettext = str
    else:
        from .. import i18n

        gettext = i18n.translations(language).gettext
    d, i = DESCRIPTIONS.get(metric, ""), INTERVALS.get(metric, "")
    return (gettext(d) if d else "").format(**fmt), (gettext(i) if i else "").format(**fmt)
