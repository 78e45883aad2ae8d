"""Every `python -m nfebench...` command in README.md and the docs it sends readers to parses: its config groups and
keys exist (Hydra composes it; a sweep is checked value by value) and the report's flags are real. Nothing runs."""

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from nfebench.__main__ import check_group_choices
from nfebench.paths import CONF_DIR, ROOT
from nfebench.recommend import _list_override

DOCS = ["README.md", "docs/results.md", "docs/usage.md", "docs/concepts.md", "docs/report.md"]
APPS = {"nfebench": "config", "nfebench.recommend": "recommend", "nfebench.tune": "tune"}
FLAGS = {"nfebench.report": {"--results", "--latex"},
         "nfebench.compare": {"--results", "--n-boot", "--seed", "--level", "--unpaired", "--rescore", "--student",
                              "--sampler"}}


def commands() -> list[tuple[str, str, list[str]]]:
    """(file, module, arguments) of each command that runs `-m nfebench...`: code lines (a comment after ` #`
    stripped) and inline `code` spans in prose; the shell loop variables of docs/results.md ($N, $S) take a value."""
    out = []
    for name in DOCS:
        for line in (ROOT / name).read_text().replace("$N", "10").replace("$S", "results/tuned").splitlines():
            spans = re.findall(r"`([^`]*-m nfebench[^`]*)`", line) or [line.split(" #")[0]]
            for text in spans:
                m = re.search(r"-m (nfebench(?:\.\w+)?)\b(.*)", text)
                if m and "`" not in m.group(2) and "..." not in m.group(2):
                    out.append((name, m.group(1), shlex.split(m.group(2).rstrip(" \\"), posix=True)))
    return out


CASES = commands()


def test_the_docs_have_commands_of_every_kind():
    mods = {m for _, m, _ in CASES}
    assert {"nfebench", "nfebench.recommend", "nfebench.report", "nfebench.tune", "nfebench.compare"} <= mods
    assert len(CASES) > 30


def first_of_sweeps(overrides: list[str]) -> list[list[str]]:
    """The override lists a sweep expands to, one per value of each swept key (the others at their first value)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    base = []
    for o in parsed:
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        base.append((o.get_key_element(), values))
    lists = [[f"{k}={v[0]}" for k, v in base]]
    for i, (k, values) in enumerate(base):
        for v in values[1:]:
            lists.append([f"{kk}={vv[0]}" if j != i else f"{k}={v}" for j, (kk, vv) in enumerate(base)])
    return lists


@pytest.mark.parametrize("where,module,args", [c for c in CASES if c[1] in APPS],
                         ids=[f"{c[0]}:{' '.join(c[2])[:60]}" for c in CASES if c[1] in APPS])
def test_hydra_command_parses(where, module, args):
    args = [a for a in args if a not in ("-m", "--multirun", "--help", "--debug")]
    if module == "nfebench.recommend":
        args = [_list_override(a) for a in args]
    args = [a for a in args if not a.startswith("hydra")]  # launcher settings: Hydra's own groups
    args = [a for a in args if not re.fullmatch(r"[A-Z_]+", a.partition("=")[2])]  # placeholders: sampler=S
    assert check_group_choices(args) is None, check_group_choices(args)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for overrides in first_of_sweeps(args):
            compose(APPS[module], overrides=overrides)


@pytest.mark.parametrize("where,module,args", [c for c in CASES if c[1] in FLAGS],
                         ids=[f"{c[0]}:{' '.join(c[2])[:60]}" for c in CASES if c[1] in FLAGS])
def test_other_commands_use_real_flags(where, module, args):
    flags = {a.split("=")[0] for a in args if a.startswith("--")}
    assert flags <= FLAGS[module], flags - FLAGS[module]
