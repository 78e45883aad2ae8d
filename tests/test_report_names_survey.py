"""The published-name map for issue 15's samplers: each maps to its own published rows, by its options."""

from nfebench.report_names import find_rule, published_names

SDE = {"snr": 0.16, "corrector_steps": 1}


def test_new_samplers_map_to_their_published_rows():
    assert published_names("fastdpm", {}, "survey_table6") == ("FastDPM",)
    assert published_names("sn_ddpm", {}, "survey_table6") == ("SN-DDPM",)
    assert published_names("npr_ddpm", {}, "survey_table4") == ("NPR-DDPM",)
    assert published_names("sn_ddim", {}, "survey_table3") == ("SN-DDIM",)
    assert published_names("npr_ddim", {}, "survey_table6") == ()  # the survey has NPR-DDIM on CelebA only
    assert published_names("rk45", {}, "sde-t2") == ("probability-flow ODE, RK45 (scipy solve_ivp atol=rtol=1e-5)",)
    assert "Gotta Go Fast VP" in published_names("ggf", {}, "survey_table6")
    assert published_names("edm_stochastic", {}, "restart-t1") == ("Improved SDE (EDM stochastic)",)
    assert published_names("restart", {}, "restart-t1") == ("Restart (18,3,2,0.14,0.30)",)
    assert not any("DPM-Solver-3" in n for n in published_names("restart", {}))  # another inner solver


def test_options_pick_the_published_variant():
    pc = published_names("sde", {"predictor": "reverse_diffusion", "corrector": "langevin", **SDE}, "sde-t1")
    p = published_names("sde", {"predictor": "reverse_diffusion", "corrector": "none", **SDE}, "sde-t1")
    assert pc == ("VP SDE, predictor=reverse diffusion, PC1000", "VE SDE, predictor=reverse diffusion, PC1000")
    assert all("PC" not in n for n in p) and len(p) == 4
    assert "VP SDE, predictor=ancestral sampling, P1000" in published_names(
        "sde", {"predictor": "ancestral", "corrector": "none"}, "sde-t1")
    assert published_names("sde", {"predictor": "euler_maruyama", "corrector": "none"}) == ()
    assert published_names("dpm", {"method": "adaptive", "order": 3}) == ()  # none transcribed (see the note)
    assert find_rule("dpm", {"method": "adaptive", "order": 3}).note
    # spacing=elbo is Watson et al.'s "Efficient Sampling", whatever the variance; other ddpm rows are not
    assert published_names("ddpm", {"spacing": "elbo", "variance": "large"}, "survey_table6") == ("Efficient Sampling",)
    assert published_names("ddpm", {"spacing": "uniform", "variance": "large"}, "survey_table5") == ("DDPM",)
