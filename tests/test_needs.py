"""nfebench.needs: what samplers, options and models declare is resolved once, in one place."""

from types import SimpleNamespace

import pytest

from nfebench import needs
from nfebench.needs import RESOLVERS, Resolution, needs_of, prepare
from nfebench.samplers import get_sampler


def point(sampler, **options):
    return SimpleNamespace(sampler=sampler, sampler_options={**get_sampler(sampler).options, **options}, tuned=None)


def test_samplers_declare_their_needs():
    assert needs_of(SimpleNamespace(), point("analytic_ddpm")) == ["moments"]
    assert needs_of(SimpleNamespace(), point("npr_ddim")) == ["cov_heads"]
    assert needs_of(SimpleNamespace(), point("dpmpp")) == []


def test_an_option_value_implies_a_need_only_for_samplers_that_take_its_option():
    assert needs_of(SimpleNamespace(), point("ddpm", spacing="elbo")) == ["elbo_costs"]
    assert needs_of(SimpleNamespace(), point("analytic_ddim", spacing="elbo")) == ["moments", "elbo_costs"]
    assert "elbo_costs" not in get_sampler("dpmpp").options
    assert needs_of(SimpleNamespace(), point("dpmpp", spacing="elbo")) == []


def test_model_needs_come_first_and_resolve_once_with_wrapper_and_row(monkeypatch):
    calls = []

    def fake(model, p, progress):
        calls.append(model)
        return Resolution(model=("wrapped", model), row={"extra": 1}, timings={"fake_seconds": 0.5})

    monkeypatch.setitem(RESOLVERS, "fake", fake)
    model = SimpleNamespace(needs=("fake", "fake"))
    out = prepare(model, point("ddim"), progress=False)
    assert calls == [model]  # declared twice, resolved once
    assert out.model == ("wrapped", model) and out.row == {"extra": 1} and out.timings == {"fake_seconds": 0.5}


def test_an_option_the_user_set_is_not_resolved_again(monkeypatch):
    monkeypatch.setitem(RESOLVERS, "moments", lambda *a: pytest.fail("resolver called for a set option"))
    out = prepare(SimpleNamespace(), point("analytic_ddpm", moments="given.npz"), progress=False)
    assert out.options["moments"] == "given.npz"


def test_resolved_options_fill_only_unset_values_and_leave_the_point_alone(monkeypatch):
    monkeypatch.setitem(RESOLVERS, "moments", lambda *a: Resolution(options={"moments": "cache.npz"}))
    p = point("analytic_ddim")
    out = prepare(SimpleNamespace(), p, progress=False)
    assert out.options["moments"] == "cache.npz" and p.sampler_options["moments"] is None


def test_unknown_need_and_duplicate_resolver_are_errors():
    with pytest.raises(KeyError, match="'nope' has no resolver"):
        prepare(SimpleNamespace(needs=("nope",)), point("ddim"), progress=False)
    with pytest.raises(ValueError, match="two resolvers"):
        needs.resolver("moments")(lambda *a: None)
