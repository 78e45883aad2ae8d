"""The report in two more forms, from the same leaderboard and the same paired tests as report.md:

  report.html  one self-contained file (inline CSS, JS and images; no network fetch; works from file://): the
               leaderboard as a sortable, filterable table, the same-seed sample grids side by side, and the markdown
               report rendered (tables, significance verdicts with best and tied in bold, published numbers, figures)
  report.tex   `--latex`: booktabs tables in the survey's layout (sampler x NFE, FID; best and tied in bold), one per
               model and protocol, each with a comment naming the protocol; a complete document pdflatex compiles
"""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import report as R

# ---------------------------------------------------------------------------------------------- markdown -> HTML


def _inline(text: str) -> str:
    """HTML of one line of our markdown: escaped, then **bold**, `code` and [links](...)."""
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', out)


def _cells(line: str) -> list[str]:
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [p.strip().replace("\\|", "|") for p in parts]


def _image(src: str, base: Path, alt: str) -> str:
    path = base / src
    if not path.is_file():
        return f"<p><i>figure missing: {html.escape(src)}</i></p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def markdown_html(md: str, base: Path) -> str:
    """The subset of markdown the report writes (headings, paragraphs, pipe tables, images on their own line) as
    HTML, images inlined as data: URIs from `base`."""
    out, lines, i = [], md.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif m := re.match(r"(#{1,6}) (.*)", line):
            level = min(len(m.group(1)) + 1, 6)  # the page's own <h1> is the title
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
            i += 1
        elif m := re.match(r"!\[([^\]]*)\]\(([^)]+)\)\s*$", line):
            out.append(_image(m.group(2), base, m.group(1)))
            i += 1
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            head, body = _cells(block[0]), [_cells(b) for b in block[2:]]
            out.append('<div class="scroll"><table class="md"><thead><tr>'
                       + "".join(f"<th>{_inline(h)}</th>" for h in head) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
                       + "</tbody></table></div>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("|", "#", "![")):
                para.append(lines[i])
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- leaderboard table

TABLE = [  # (header, column, kind): kind "num" sorts numerically
    ("model", "model", "text"), ("dataset", "dataset", "text"), ("sampler", "variant", "text"),
    ("NFE", "nfe", "num"), ("NFE used", "nfe_used", "num"), ("samples", "num_samples", "num"), ("seed", "seed", "num"),
    ("FID", "fid", "num"), ("IS", "is_mean", "num"), ("KID", "kid_mean", "num"), ("NLL (bits/dim)", "nll_bpd", "num"),
    ("NLL method", "nll_method", "text"), ("features", "feature_extractor", "text"), ("reference", "reference", "text"),
    ("run", "run_id", "text"),
]
METRIC_FILTERS = (("fid", "FID"), ("is_mean", "IS"), ("kid_mean", "KID"), ("nll_bpd", "NLL"))


def leaderboard_html(df: pd.DataFrame) -> str:
    """The leaderboard as a table whose headers sort it (click) and whose selects filter it by model, sampler, NFE
    and metric (rows that have it); every row carries data-model, data-sampler, data-nfe and data-metrics."""
    rows = []
    for _, r in df.sort_values(["model", "sampler", "nfe", "variant", "seed"]).iterrows():
        metrics = " ".join(m for m, _ in METRIC_FILTERS if np.isfinite(r[m]))
        cells = []
        for _, col, kind in TABLE:
            v = r[col]
            if kind == "num":
                text = R.fmt(v) if col in ("fid", "is_mean", "kid_mean", "nll_bpd") else R.fmt_nfe(v)
                key = "" if v is None or not np.isfinite(v) else repr(float(v))
                cells.append(f'<td data-v="{key}">{html.escape(text)}</td>')
            else:
                cells.append(f"<td>{html.escape(str(v))}</td>")
        rows.append(f'<tr data-model="{html.escape(r["model"])}" data-sampler="{html.escape(r["sampler"])}" '
                    f'data-nfe="{R.fmt_nfe(r["nfe"])}" data-metrics="{metrics}">' + "".join(cells) + "</tr>")

    def select(name: str, label: str, values) -> str:
        opts = "".join(f'<option value="{html.escape(str(v))}">{html.escape(str(t))}</option>' for v, t in values)
        return f'<label>{label} <select id="f-{name}"><option value="">all</option>{opts}</select></label>'

    nfes = sorted(df["nfe"].dropna().unique())
    filters = " ".join([
        select("model", "model", [(m, m) for m in sorted(df["model"].unique())]),
        select("sampler", "sampler", [(s, s) for s in sorted(df["sampler"].unique())]),
        select("nfe", "NFE", [(R.fmt_nfe(n), R.fmt_nfe(n)) for n in nfes]),
        select("metric", "has metric", [(m, t) for m, t in METRIC_FILTERS if df[m].notna().any()]),
    ])
    head = "".join(f'<th data-kind="{kind}" title="click to sort">{html.escape(h)}</th>' for h, _, kind in TABLE)
    return (f'<div class="filters">{filters} <span id="count"></span></div>'
            f'<div class="scroll"><table id="leaderboard"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


# ---------------------------------------------------------------------------------------------- sample grids


def _png(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def same_seed_grids(df: pd.DataFrame, results_dir: Path, k: int = 4) -> str:
    """Per model and NFE: the first k x k samples of every sampler run from the lowest seed, side by side. Sample i
    of every run starts from the same noise (per-sample seeds), so the tiles differ only by the sampler."""
    out = []
    for (model, dataset), rows in df[df["nfe"].notna()].groupby(["model", "dataset"], sort=True):
        blocks = []
        for nfe, at in rows.groupby("nfe"):
            seed = at["seed"].min()
            cards = []
            for _, g in at[at["seed"] == seed].groupby("variant", sort=True):
                # the variant's first run at this NFE that has its samples here (runs of one seed share their noise
                # whatever their sample count)
                found = ((r, R.load_samples(results_dir, r["run_id"])) for _, r in g.iterrows())
                r, samples = next(((r, s) for r, s in found if s is not None), (None, None))
                if samples is None:
                    continue
                fid = f"FID {R.fmt(r['fid'])}" if np.isfinite(r["fid"]) else ""
                cards.append(f'<div class="card"><img alt="samples of {html.escape(r["variant"])} at NFE '
                             f'{R.fmt_nfe(nfe)}" src="data:image/png;base64,{_png(R.tile(samples, k))}">'
                             f'<div>{html.escape(r["variant"])}<br><small>{fid}</small></div></div>')
            if cards:
                blocks.append(f"<h4>NFE {R.fmt_nfe(nfe)}, seed {R.fmt_nfe(seed)}</h4>"
                              f'<div class="cards">{"".join(cards)}</div>')
        if blocks:
            out.append(f"<h3>Model <code>{html.escape(model)}</code>, dataset <code>{html.escape(dataset)}</code>"
                       f"</h3>" + "".join(blocks))
    return "\n".join(out) or "<p>No run directory with samples.npz was found.</p>"


# ---------------------------------------------------------------------------------------------- the page

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1400px;
padding:1em 2em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
code{background:#f3f3f3;padding:0 .2em;border-radius:3px}
table{border-collapse:collapse;font-size:12.5px;margin:.5em 0 1em}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;white-space:nowrap}
th{background:#f4f6f8;position:sticky;top:0}
#leaderboard th{cursor:pointer;user-select:none}
#leaderboard th.asc::after{content:" \\25B2"}#leaderboard th.desc::after{content:" \\25BC"}
td[data-v]{text-align:right;font-variant-numeric:tabular-nums}
.scroll{overflow:auto;max-height:36em}
.filters{margin:.5em 0;display:flex;gap:1.2em;flex-wrap:wrap;align-items:center}
figure{margin:1em 0}figure img{max-width:100%}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{width:110px;font-size:11px;text-align:center;overflow-wrap:anywhere}
.card img{width:104px;height:auto;image-rendering:pixelated;border:1px solid #ccc}
nav a{margin-right:1.2em}
"""

JS = """
(function(){
  var table=document.getElementById('leaderboard'); if(!table) return;
  var body=table.tBodies[0], heads=table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads,function(th,i){
    th.addEventListener('click',function(){
      var asc=!th.classList.contains('asc');
      Array.prototype.forEach.call(heads,function(h){h.classList.remove('asc','desc');});
      th.classList.add(asc?'asc':'desc');
      var num=th.getAttribute('data-kind')==='num';
      var rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){
        var x=a.cells[i], y=b.cells[i], r;
        if(num){var u=x.getAttribute('data-v'), v=y.getAttribute('data-v');
          if(u===''&&v==='') r=0; else if(u==='') return 1; else if(v==='') return -1;
          else r=parseFloat(u)-parseFloat(v);}
        else r=x.textContent.localeCompare(y.textContent);
        return asc?r:-r;});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
  var sel=['model','sampler','nfe','metric'].map(function(n){return document.getElementById('f-'+n);});
  function apply(){
    var shown=0;
    Array.prototype.forEach.call(body.rows,function(r){
      var ok=(!sel[0].value||r.getAttribute('data-model')===sel[0].value)&&
             (!sel[1].value||r.getAttribute('data-sampler')===sel[1].value)&&
             (!sel[2].value||r.getAttribute('data-nfe')===sel[2].value)&&
             (!sel[3].value||(' '+r.getAttribute('data-metrics')+' ').indexOf(' '+sel[3].value+' ')>=0);
      r.style.display=ok?'':'none'; if(ok) shown++;});
    document.getElementById('count').textContent=shown+' of '+body.rows.length+' runs';
  }
  sel.forEach(function(s){s.addEventListener('change',apply);}); apply();
})();
"""


def build_html(results_dir: Path, markdown: str) -> str:
    """report.html from the leaderboard, the run directories' samples and the markdown report (with its figures)."""
    df = R.load_leaderboard(results_dir / "leaderboard.csv")
    body = [f"<h1>nfebench report: <code>{html.escape(str(results_dir))}</code></h1>",
            '<nav><a href="#leaderboard-h">Leaderboard</a><a href="#samples-h">Same-seed samples</a>'
            '<a href="#report-h">Tables, significance, published numbers, figures</a></nav>',
            '<h2 id="leaderboard-h">Leaderboard</h2>',
            "<p>Click a column header to sort; the selects filter the rows. FIDs from different feature extractors or "
            "reference sets (columns <i>features</i>, <i>reference</i>) are not comparable.</p>",
            leaderboard_html(df) if len(df) else "<p>The leaderboard has no runs yet.</p>",
            '<h2 id="samples-h">Same-seed samples</h2>',
            "<p>The first 16 samples of each run at each NFE, from the same seed: sample i of every run starts from the "
            "same noise, so the tiles differ only by the sampler.</p>",
            same_seed_grids(df, results_dir) if len(df) else "",
            '<h2 id="report-h">Report</h2>',
            markdown_html(markdown.split("\n", 1)[1] if markdown.startswith("# ") else markdown, results_dir)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>nfebench report</title><style>{CSS}</style></head><body>\n" + "\n".join(body)
            + f"\n<script>{JS}</script>\n</body></html>\n")


# ---------------------------------------------------------------------------------------------- LaTeX

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "–": "--", "…": r"\dots{}"}


def tex(text: str) -> str:
    return "".join(_TEX.get(c, c) for c in str(text))


def latex_table(model: str, dataset: str, proto: "R.Protocol", rows: pd.DataFrame, results_dir: Path) -> str:
    """One booktabs table: samplers x NFE, FID; at each NFE the best and those tied with it (paired 95 % CI of the
    difference covers 0) in bold, a dagger where a sampler was not tested (no stored features or samples)."""
    nfes = sorted(rows.loc[rows["fid"].notna(), "nfe"].unique())
    cells, untested = {}, False
    for nfe in nfes:
        at = rows[(rows["nfe"] == nfe) & rows["fid"].notna()]
        diffs = R.fid_differences(at, results_dir) if at["variant"].nunique() > 1 else \
            [{"variant": v, "fid": m, "tied": True, "delta": 0.0}
             for v, m in zip(*R.aggregate(at, "fid")[["variant", "mean"]].T.values)]
        for d in diffs:
            text = R.fmt(d["fid"])
            if d["tied"] and at["variant"].nunique() > 1:
                text = rf"\textbf{{{text}}}"
            elif not np.isfinite(d.get("delta", np.nan)):
                text, untested = text + r"$^\dagger$", True
            cells[(d["variant"], nfe)] = text
    variants = sorted(rows.loc[rows["fid"].notna(), "variant"].unique())
    spec = "l" + "r" * len(nfes)
    lines = [f"% nfebench: model {model}, dataset {dataset}; FID in {proto.feature_extractor} features against "
             f"{proto.reference}; {proto.num_samples:g} samples per run, one run per cell (lowest seed for the test)",
             "% significance: paired bootstrap over the shared seeds (nfebench.stats.paired_fid, 1000 replicates)",
             r"\begin{table}[ht]", r"\centering", r"\small",
             rf"\caption{{FID of \texttt{{{tex(model)}}} on \texttt{{{tex(dataset)}}} ({tex(proto.feature_extractor)} "
             rf"features, reference {tex(proto.reference)}, {proto.num_samples:g} samples). Bold: the lowest FID at "
             r"each NFE and the samplers whose paired 95\,\% CI of the difference to it covers 0 (tied)"
             + (r"; $^\dagger$: not tested (no stored features)" if untested else "") + ".}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             "Sampler & " + " & ".join(f"NFE {R.fmt_nfe(n)}" for n in nfes) + r" \\", r"\midrule"]
    for v in variants:
        lines.append(tex(v) + " & " + " & ".join(cells.get((v, n), "--") for n in nfes) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def build_latex(results_dir: Path) -> str:
    """report.tex: a complete document (article, booktabs) with one table per model and protocol."""
    df = R.load_leaderboard(results_dir / "leaderboard.csv")
    tables = []
    for (model, dataset), rows in df.groupby(["model", "dataset"], sort=True):
        for proto, g in R.protocol_groups(rows):
            if g["fid"].notna().any():
                tables.append(latex_table(model, dataset, proto, g, results_dir))
    body = "\n\n".join(tables) or "No FID was measured."
    return ("% nfebench report tables (python -m nfebench.report --latex); copy a table environment into a paper\n"
            "% (it needs \\usepackage{booktabs}).\n"
            "\\documentclass{article}\n\\usepackage[margin=2cm]{geometry}\n\\usepackage{booktabs}\n"
            "\\begin{document}\n\n" + body + "\n\n\\end{document}\n")


def write_extras(results_dir: Path, markdown: str, latex: bool) -> list[Path]:
    """Write results_dir/report.html (and report.tex with latex); returns the paths written."""
    from .leaderboard import atomic_write_text

    written = [results_dir / "report.html"]
    atomic_write_text(written[0], build_html(results_dir, markdown))
    if latex:
        written.append(results_dir / "report.tex")
        atomic_write_text(written[1], build_latex(results_dir))
    return written


__all__ = ["build_html", "build_latex", "leaderboard_html", "markdown_html", "same_seed_grids", "write_extras"]
