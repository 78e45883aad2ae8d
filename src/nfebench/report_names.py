"""Which published rows correspond to which of our samplers: an explicit, reviewed name mapping.

`published_results.csv` (src/nfebench/data, sources in docs/published_sources.md) names methods the way each paper
does ("DDIM", "DPM-Solver-fast (uniform logSNR, order mix 3/2/1)", "UniPC-3 (bh2)", ...). A row of ours is a sampler
name plus its resolved options (the leaderboard's `sampler_options` JSON). `NAME_RULES` maps the second to the first:
the first rule whose sampler matches and whose `when` options all equal the row's options gives, per source key, the
published method names that are the same algorithm. Only the algorithm is matched; time-step spacing, clipping,
checkpoint and FID code are not (they differ; see docs/report.md), and a sampler with no rule, or a rule with no
sources, has no published counterpart.

Deliberate non-matches (read before "fixing" them):
  - dpmpp 2M and 2S: the CSV has DPM-Solver++ only as 3M (multistep, 3rd order) and as a 3rd-order singlestep.
  - deis: our `order` counts Lagrange points, so order 3 is the paper's tAB2 (tAB-r uses r + 1 points). The survey's
    "DEIS" and dpmsv3's "DEIS (tAB3)" are tAB3, which we do not implement.
  - plms, diffusers: no published row is the same algorithm.
  - sde euler_maruyama and dpm method=adaptive: no published row in the CSV (see their rules' notes).
  - gDDIM: mapped to deis (order 3, tab), not a sampler of its own (isotropic VP: the same exponential integrator).

`RANK_REFERENCES` are the published tables used for rank agreement: each one paper (or one table), one dataset and,
where the paper ran several, one checkpoint, so the published ordering is one consistent protocol.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NameRule:
    sampler: str                     # our sampler (registry name)
    when: dict                       # options that must equal these values ({} = any options)
    published: dict                  # source key -> tuple of published method names (the CSV's `sampler` column)
    note: str = ""


def _ddim_t1(kind: str) -> tuple[str, ...]:
    return (f"{kind}; quadratic tau", f"{kind}; linear tau")  # CIFAR-10 rows are quadratic, CelebA rows linear


HEUN_EDM = "EDM deterministic Heun 2nd order, 18 steps, rho=7 (sigma(t)=t, s(t)=1)"
UNIPC_DPMSV3 = ("UniPC (3rd order, best of B1/B2)", "UniPC (3rd order)")

SURVEY_TABLES = ("survey_table3", "survey_table4", "survey_table5", "survey_table6")
RESTART_VP = "baseline-cifar10-32x32-uncond-vp.pkl (=score_sde DDPM++ cont VP)"
PF_ODE_RK45 = "probability-flow ODE, RK45 (scipy solve_ivp atol=rtol=1e-5)"
IMPROVED_SDE = "Improved SDE (EDM stochastic)"


def _sde_t1(predictor: str, runs: tuple[str, ...]) -> tuple[str, ...]:
    """score_sde Table 1's VP and VE rows of one predictor ("ancestral sampling", "reverse diffusion")."""
    return tuple(f"{sde} SDE, predictor={predictor}, {run}" for sde in ("VP", "VE") for run in runs)


def _in_survey(*names: str, tables=SURVEY_TABLES) -> dict:
    return {t: names for t in tables}


NAME_RULES: tuple[NameRule, ...] = (
    # --- issue 21: few-step models (the algorithm only: each row needs its own distilled model) -----------------
    NameRule("consistency", {}, {"fewstep-notes": ("Consistency Distillation (CD)",
                                                   "Improved Consistency Training (iCT)",
                                                   "Continuous-time Consistency Model (sCM)")},
             "multistep consistency sampling (Song et al. 2023, Alg. 1); CD, iCT and sCM are different models, each "
             "needs the authors' checkpoint (sCM samples with TrigFlow's own sampler)"),
    # --- issue 15 (first: a spacing=elbo ddpm must not fall through to the plain ddpm rules) ----------------------
    NameRule("ddpm", {"spacing": "elbo"}, _in_survey("Efficient Sampling", tables=SURVEY_TABLES[1:]),
             "Watson et al. 2021's ELBO-optimal steps; the survey credits its 'Efficient Sampling' rows to [105]/[137] "
             "on other models (learned-variance DDPMs); ours is the DP on this model's own bound"),
    NameRule("fastdpm", {}, {"survey_table6": ("FastDPM",)},
             "the survey's FastDPM rows are the best of Kong & Ping's variants at each S; ours runs one variant"),
    NameRule("sn_ddpm", {}, _in_survey("SN-DDPM")),
    NameRule("sn_ddim", {}, {"survey_table3": ("SN-DDIM",)}),
    NameRule("npr_ddpm", {}, _in_survey("NPR-DDPM")),
    NameRule("npr_ddim", {}, {"survey_table3": ("NPR-DDIM",)}),
    NameRule("edm_stochastic", {}, {
        "restart-t1": (IMPROVED_SDE,),
        "restart-t2": ("Improved SDE (EDM stochastic sampler, EDM-tuned params)",),
        "restart-t4": (IMPROVED_SDE,),
        "edm-txt": ("EDM stochastic sampler (Alg.2, tuned S_churn etc.)", "EDM stochastic sampler"),
    }, "EDM Alg. 2; the CIFAR-10 VP rows use Table 5's preset (S_churn 30, S_tmin 0.01, S_tmax 1, S_noise 1.007)"),
    NameRule("restart", {}, {
        "restart-t1": ("Restart (18,3,2,0.14,0.30)",),
        "restart-t3": tuple(f"Restart (Heun) config (N_main,N_restart,K,tmin,tmax)={c}" for c in (
            "(20,9,30,0.06,0.20)", "(18,3,20,0.06,0.30)", "(18,3,10,0.06,0.30)", "(18,3,5,0.06,0.30)",
            "(18,3,2,0.06,0.30)")),
        "restart-t5": ("Restart multi-level (configs in paper Table 5)",),
        "survey_table4": ("Restart",),
    }, "Heun restarts only: the 'Restart w/ DPM-Solver-3' rows use another inner solver"),
    NameRule("sde", {"predictor": "reverse_diffusion", "corrector": "langevin"}, {
        "sde-t1": _sde_t1("reverse diffusion", ("PC1000",)),
        "sde-t3": ("PC sampler (reverse-diffusion predictor, N=1000; Langevin corrector for VE)",),
        "survey_table5": ("VP SDE", "VE SDE", "sub-VP SDE"),
    }, "score_sde's PC sampler; sde-t3 and the survey run the corrector for VE only (VP: predictor only)"),
    NameRule("sde", {"predictor": "reverse_diffusion", "corrector": "none"}, {
        "sde-t1": _sde_t1("reverse diffusion", ("P1000", "P2000")),
        "restart-t2": ("Vanilla reverse-diffusion SDE (Song et al.)",),
        "restart-t4": ("Vanilla SDE",),
    }),
    NameRule("sde", {"predictor": "ancestral", "corrector": "langevin"}, {"sde-t1": _sde_t1("ancestral sampling",
                                                                                           ("PC1000",))}),
    NameRule("sde", {"predictor": "ancestral", "corrector": "none"}, {"sde-t1": _sde_t1("ancestral sampling",
                                                                                       ("P1000", "P2000"))}),
    NameRule("sde", {"predictor": "euler_maruyama"}, {},
             "score_sde's tables report reverse-diffusion and ancestral predictors, no Euler-Maruyama row"),
    NameRule("rk45", {}, {"sde-t2": (PF_ODE_RK45,), "rf-t1-sec": ("RK45 (adaptive), flow-matching model",)},
             "score_sde's ODE sampler (RK45, rtol = atol = 1e-5); rectified flow's evaluation uses the same"),
    NameRule("ggf", {}, {
        **_in_survey("Gotta Go Fast VP", "Gotta Go Fast VE", tables=("survey_table5", "survey_table6")),
        "restart-t2": ("Gotta Go Fast adaptive SDE",),
    }, "the restart-t2 rows are quoted from the GGF paper (score_sde VP), not re-run"),
    NameRule("dpm", {"method": "adaptive"}, {},
             "no DPM-Solver-12 / -23 row in the CSV: Lu et al. 2022's adaptive results (Sec. 3.4) are not transcribed"),
    # --- issues before 15 ---------------------------------------------------------------------------------------
    NameRule("ddpm", {"variance": "large"}, {
        "survey_table5": ("DDPM",),
        "ddpm": ("ancestral DDPM (fixed sigma^2=beta_t), T=1000",),
        "ddim-t1": _ddim_t1("DDPM sigma-hat (large variance)"),
    }, "Ho et al.'s CIFAR-10 sampler uses sigma^2 = beta_t (fixedlarge)"),
    NameRule("ddpm", {"variance": "small"}, {
        "hf-disc10": ("DDPMPipeline default (1000-step ancestral)",),
    }, "diffusers' DDPMScheduler default is fixed_small (beta-tilde)"),
    NameRule("ddim", {"eta": 0.0}, {
        "survey_table6": ("DDIM",),
        "ddim-t1": _ddim_t1("DDIM eta=0 (deterministic)"),
        "dpmsv3-t9": ("DDIM (first order)",),
        "deis-img": ("DDIM (as run by DEIS authors)",),
    }),
    NameRule("ddim", {"eta": 0.2}, {"ddim-t1": _ddim_t1("generalized DDIM eta=0.2")}),
    NameRule("ddim", {"eta": 0.5}, {"ddim-t1": _ddim_t1("generalized DDIM eta=0.5")}),
    NameRule("ddim", {"eta": 1.0}, {"ddim-t1": _ddim_t1("generalized DDIM eta=1.0 (=DDPM posterior variance)")}),
    NameRule("euler", {}, {"diffsolvers": ("Euler (DDIM)",), "cm-t2-rf": ("Euler, 1 step, flow-matching model",)},
             "Euler on EDM's grid (= DDIM on that grid); one flow step starts at s = 1 there, at s = 0.999 here"),
    NameRule("heun", {}, {
        "survey_table6": ("EDM",),
        "edm-t2": (HEUN_EDM,),
        "dpmsv3-t1": ("Heun's 2nd order (EDM)",),
        "diffsolvers": ("Heun",),
        "restart-t1": ("ODE Heun (EDM)",),
        "restart-t2": ("ODE Heun (EDM discretization)",),
        "neuralsolver-readme": ("Heun, cfg, flow-matching model",),  # Heun in the flow's own time (frame=model)
    }),
    NameRule("dpm", {"method": "singlestep", "order": 3}, {
        "survey_table6": ("DPM-Solver",),
        "dpms-txt": ("DPM-Solver-fast (uniform logSNR, order mix 3/2/1)",),
        "dpmsv3-t12": ("DPM-Solver (singlestep, noise pred.)",),
        "dpms-t1-sec": ("DPM-Solver-3",),
    }, "our default is DPM-Solver-fast (Lu et al. 2022, Sec. 3.4)"),
    NameRule("dpm", {"method": "singlestep", "order": 2}, {
        "dpms-t1-sec": ("DPM-Solver-2",),
        "diffsolvers": ("DPM-Solver-2",),
    }),
    NameRule("dpm", {"method": "multistep", "order": 3}, {
        "dpmsv3-t12": ("DPM-Solver (multistep, noise pred.)",),
    }),
    NameRule("dpmpp", {"variant": "3M"}, {
        "dpmsv3-t1": ("DPM-Solver++ (multistep, 3rd order)",),
        "diffsolvers": ("DPM-Solver++(3M)",),
    }),
    NameRule("dpmpp", {"variant": "2M"}, {}, "no DPM-Solver++(2M) row in the CSV"),
    NameRule("dpmpp", {"variant": "2S"}, {}, "the CSV's singlestep DPM-Solver++ is 3rd order, ours 2S is 2nd"),
    NameRule("unipc", {"order": 3, "variant": "bh2"}, {
        "diffsolvers": ("UniPC-3 (bh2)",),
        "dpmsv3-t1": UNIPC_DPMSV3,
        "unipc-abs": ("UniPC",),
    }),
    NameRule("unipc", {"order": 3, "variant": "bh1"}, {
        "dpmsv3-t1": UNIPC_DPMSV3,
        "unipc-abs": ("UniPC",),
    }, "dpmsv3 reports the best of B1/B2"),
    NameRule("deis", {"order": 3, "basis": "tab"}, {"deis-img": ("DEIS tAB2",), "survey_table6": ("gDDIM",)},
             "3 Lagrange points = tAB2; gDDIM (Zhang et al. 2022) on an isotropic VP model is this exponential "
             "integrator (DDIM/DEIS), so the survey's gDDIM row sits here rather than as a duplicate sampler"),
    NameRule("deis", {"order": 2, "basis": "tab"}, {"deis-img": ("DEIS tAB1",)}),
    NameRule("deis", {"order": 3, "basis": "logrho"}, {"deis-img": ("DEIS rhoAB2",)}),
    NameRule("deis", {"order": 2, "basis": "logrho"}, {"deis-img": ("DEIS rhoAB1",)}),
    NameRule("pndm", {}, {
        "survey_table3": ("PNDM",),
        "gdim-sec": ("F-PNDM",),
    }, "ours is F-PNDM (Runge-Kutta warm-up); the survey's PNDM numbers are F-PNDM's"),
    NameRule("ipndm", {}, {"diffsolvers": ("iPNDM-4",)}),
    NameRule("analytic_ddpm", {}, {
        "survey_table3": ("Analytic DPM",), "survey_table4": ("Analytic DPM",),
        "survey_table5": ("Analytic DPM",), "survey_table6": ("Analytic DPM",),
    }),
    NameRule("analytic_ddim", {}, {"gdim-sec": ("Analytic-DDIM",)}),
    NameRule("plms", {}, {}, "no published PLMS row"),
    NameRule("diffusers", {}, {}, "depends on the scheduler: not mapped"),
)


def _equal(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def find_rule(sampler: str, options: dict) -> NameRule | None:
    """The first rule for `sampler` whose `when` options all equal `options` (a missing option does not match)."""
    for rule in NAME_RULES:
        if rule.sampler == sampler and all(k in options and _equal(options[k], v) for k, v in rule.when.items()):
            return rule
    return None


def published_names(sampler: str, options: dict, source: str | None = None) -> tuple[str, ...]:
    """Published method names for our sampler + options: in one source, or (source=None) in all of them."""
    rule = find_rule(sampler, options)
    if rule is None:
        return ()
    if source is not None:
        return tuple(rule.published.get(source, ()))
    return tuple(dict.fromkeys(n for names in rule.published.values() for n in names))


@dataclass(frozen=True)
class RankReference:
    key: str
    title: str                       # what the reader is told we compare with
    sources: tuple[str, ...]         # source keys of published_results.csv
    dataset: str
    model_checkpoint: str | None = None
    caveats: str = ""

    def rows(self, published):
        """This reference's rows of the published DataFrame."""
        sel = published["source"].isin(self.sources) & (published["dataset"] == self.dataset)
        if self.model_checkpoint is not None:
            sel &= published["model_checkpoint"] == self.model_checkpoint
        return published[sel]


SCORE_SDE_DEEP = "score_sde vp/cifar10_ddpmpp_deep_continuous ckpt_8"
EDM_VP_UNCOND = "edm-cifar10-32x32-uncond-vp.pkl"

# In order of preference: one paper's re-runs on one checkpoint first, the survey's mixed table last.
RANK_REFERENCES: tuple[RankReference, ...] = (
    RankReference("dpmsv3-vp", "DPM-Solver-v3 (Zheng et al. 2023) Tables 1, 9, 12: re-runs on score_sde VP deep "
                  "checkpoint_8, CIFAR-10 uncond.", ("dpmsv3-t1", "dpmsv3-t9", "dpmsv3-t12"), "CIFAR-10 uncond",
                  SCORE_SDE_DEEP, "the DEIS row of Table 1 is quoted from the DEIS paper, not re-run"),
    RankReference("dpmsv3-edm", "DPM-Solver-v3 (Zheng et al. 2023) Table 1: EDM VP uncond. checkpoint, CIFAR-10.",
                  ("dpmsv3-t1",), "CIFAR-10 uncond", EDM_VP_UNCOND, "row/model assignment inferred from the layout"),
    RankReference("diffsolvers-edm", "zju-pi/diff-sampler README: third-party runs on EDM VP uncond., CIFAR-10 "
                  "(EDM fid.py, 50k).", ("diffsolvers",), "CIFAR-10 uncond", EDM_VP_UNCOND),
    RankReference("deis", "DEIS (Zhang & Chen 2022) results table, CIFAR-10.", ("deis-img",), "CIFAR-10 uncond"),
    RankReference("ddim-t1", "DDIM (Song et al. 2021) Table 1, CIFAR-10 (quadratic tau).", ("ddim-t1",), "CIFAR-10"),
    RankReference("restart-vp", "Restart (Xu et al. 2023) Tables 2-3: ODE Heun, vanilla and improved SDE, Restart, "
                  "re-run on one VP checkpoint, CIFAR-10 uncond.", ("restart-t2", "restart-t3"), "CIFAR-10 uncond",
                  RESTART_VP, "NFE 35-1024; the GGF rows of Table 2 are quoted on another model (excluded here)"),
    RankReference("survey-t6", "Survey (Cao et al.) Table 6, CIFAR-10 NFE < 1000.", ("survey_table6",), "CIFAR-10",
                  None, "the survey copies each number from a different paper, model and FID code"),
)

# NLL: (nll_method, nll_variance) -> source -> published names (variance None = any). Definitions differ: see docs.
NLL_RULES: dict = {
    ("vlb", "analytic"): {"survey_table5": ("Analytic DPM",), "survey_table6": ("Analytic DPM",)},
    ("vlb", None): {"survey_table5": ("DDPM",), "ddpm": ("ancestral DDPM (fixed sigma^2=beta_t), T=1000",
                                                          "ancestral, T=1000")},
    ("ode", None): {"sde-t2": ("probability-flow ODE, RK45 (scipy solve_ivp atol=rtol=1e-5)",)},
}


def nll_published_names(method, variance) -> dict:
    """source -> published names for an NLL method (and variance), {} when none is mapped."""
    return NLL_RULES.get((method, variance)) or NLL_RULES.get((method, None)) or {}
