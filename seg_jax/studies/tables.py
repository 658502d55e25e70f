"""A study's numbers as text: `results.csv` (full precision), `results.md` and `results.tex` (rounded, with the
notes that make them reproducible: definitions, seeds, commit, config hashes, runs that did not finish).

Every function takes an `aggregate.StudyResults` and returns a string; nothing here computes a statistic.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from typing import TYPE_CHECKING

from seg_jax.studies import plots, stats

if TYPE_CHECKING:
    from seg_jax.studies.aggregate import StudyResults

CSV_COLUMNS = ("arm", "metric", "n", "mean", "std", "ci95_low", "ci95_high",
               "diff_mean", "diff_ci95_low", "diff_ci95_high", "p_value")
METHOD = ("mean ± std over the finished seeds (std with ddof = 1); 95 % CI of the mean from Student's t with n − 1 "
          "degrees of freedom; Δ: the paired difference arm − baseline over the seeds both finished, with its "
          "95 % CI (t on the differences) and the two-sided paired t-test p (NaN when all differences are 0)")
COMPARISON_COLUMNS = ("first", "second", "n", "first_mean", "first_std", "second_mean", "second_std",
                      "diff_mean", "diff_ci95_low", "diff_ci95_high", "p_value")
COMPARISON_METHOD = ("first − second (each arm:scalar) paired by seed over the seeds both finished, with the "
                     "statistics of Δ above; first and second: mean ± std over each one's finished seeds")
DASH = "—"


# ----------------------------------------------------------------------------------------------------- csv
def csv_text(results: StudyResults) -> str:
    """`results.csv`: `CSV_COLUMNS`, one row per arm × metric; floats as `repr` (full precision), NaN and the
    baseline's diff columns empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in results.rows:
        s, d = row.summary, row.diff or {}
        writer.writerow([row.arm, row.metric, s["n"]] + [_repr(s[k]) for k in CSV_COLUMNS[3:7]]
                        + [_repr(d.get(k, math.nan)) for k in CSV_COLUMNS[7:]])
    return out.getvalue()


def comparisons_csv_text(results: StudyResults) -> str:
    """`comparisons.csv`: `COMPARISON_COLUMNS`, one row per comparison (terms as "arm:scalar", n the pairs);
    floats as in results.csv."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COMPARISON_COLUMNS)
    for c in results.comparisons:
        (a, b), d = c.summaries, c.diff
        writer.writerow([c.label(c.first), c.label(c.second), d["n"]]
                        + [_repr(x) for x in (a["mean"], a["std"], b["mean"], b["std"])]
                        + [_repr(d[k]) for k in COMPARISON_COLUMNS[7:]])
    return out.getvalue()


# ----------------------------------------------------------------------------------------------------- notes
def notes(results: StudyResults) -> list[tuple[str, list[tuple[str, str]]]]:
    """The notes under the tables as (section title, [(label, text)]), shared by markdown and LaTeX."""
    study = results.study
    definitions = [(d.name, d.text if d.arms is None else f"({', '.join(d.arms)}) {d.text}")
                   for d in results.definitions] or [("none", "the finished runs' results.json give none")]
    finished = {arm: len(results.finished(arm)) for arm in study.arms}
    seeds = [("seeds", ", ".join(map(str, study.seeds)))]
    seeds += [(arm, f"{count} of {len(study.seeds)} seeds finished") for arm, count in finished.items()]
    configs = [(arm, _config_note(results.config_hashes[arm], study.arms[arm])) for arm in study.arms]
    unfinished = [(run.label, f"{run.status}: {run.reason}") for run in results.unfinished()]
    method = [("statistics", METHOD)] + ([("comparisons", COMPARISON_METHOD)] if results.comparisons else [])
    return [("Method", method),
            ("Definitions (from the runs' results.json)", definitions),
            ("Seeds", seeds),
            ("Commit", results.commits),
            ("Configs (sha256 of config.json without seed, name, *_dir paths and added fields at their neutral "
             "values, a path's seed<k> read as seed{seed}; first 12 hex)", configs),
            ("Runs not finished (not counted in n)", unfinished or [("none", "every run finished")])]


def _config_note(hashes: dict[int, str], overrides) -> str:
    shown = json.dumps(overrides, sort_keys=True)
    distinct = sorted(set(hashes.values()))
    if not distinct:
        return f"no config.json in any run; overrides {shown}"
    if len(distinct) == 1:
        return f"{distinct[0]}; overrides {shown}"
    per_seed = ", ".join(f"seed{seed} {digest}" for seed, digest in sorted(hashes.items()))
    return f"THE SEEDS DISAGREE ON THE CONFIG: {per_seed}; overrides {shown}"


# ----------------------------------------------------------------------------------------------------- markdown
def markdown(results: StudyResults, *, plots_dir: str, level: int = 1) -> str:
    """`results.md`: per metric a table (arms × mean ± std, CI, Δ vs the baseline, its CI, p) and its bar chart,
    the per-class tables, the learning curves, then the notes.

    plots_dir: the plots folder relative to where the text is written; level: the heading level of the title.
    """
    study, h = results.study, "#" * level
    lines = [f"{h} Study `{study.name}`", ""]
    lines += [_md_text(study.description), ""] if study.description else []
    lines += [f"Mean ± std and 95 % CI over the finished seeds; Δ vs {study.baseline} paired by seed (see Method); "
              "**bold**: the CI of Δ excludes 0.", ""]
    for metric in study.metrics:
        lines += [f"{h}# {metric}", "", f"| arm | n | mean ± std | 95 % CI | Δ vs {study.baseline} | 95 % CI of Δ "
                  f"| p | pairs |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for row in (r for r in results.rows if r.metric == metric):
            lines.append("| " + " | ".join(_md_row(row, baseline=study.baseline)) + " |")
        lines += ["", f"![{metric}: mean and 95 % CI per arm]({plots_dir}/{plots.bars_file(metric)})", ""]
    if results.comparisons:
        lines += [f"{h}# Paired comparisons", "", "Δ = first − second, paired by seed (see Method).", "",
                  "| first | second | first: mean ± std | second: mean ± std | Δ | 95 % CI of Δ | p | pairs |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += ["| " + " | ".join(_md_comparison(c)) + " |" for c in results.comparisons] + [""]
    for prefix, classes in results.per_class.items():
        lines += [f"{h}# `{prefix}/<class>` per class (mean ± std)", ""]
        if not classes:
            lines += ["No finished run.", ""]
            continue
        lines += ["| class | " + " | ".join(study.arms) + " |", "| --- |" + " ---: |" * len(study.arms)]
        lines += [f"| {_md_text(cls)} | " + " | ".join(mean_std(by_arm[arm]) for arm in study.arms) + " |"
                  for cls, by_arm in classes.items()]
        lines.append("")
    lines += [f"{h}# Learning curves", "", f"![learning curves]({plots_dir}/{plots.CURVES_FILE})", ""]
    for title, items in notes(results):
        lines += [f"{h}# {title}", ""] + [f"- `{label}`: {_md_text(text)}" for label, text in items] + [""]
    return "\n".join(lines)


def _md_row(row, *, baseline: str) -> list[str]:
    s = row.summary
    cells = [f"{row.arm} (baseline)" if row.arm == baseline else row.arm, str(s["n"]), mean_std(s),
             interval(s["ci95_low"], s["ci95_high"])]
    return cells + ([DASH] * 4 if row.diff is None else _md_diff(row.diff))


def _md_comparison(c) -> list[str]:
    return [f"`{c.label(c.first)}`", f"`{c.label(c.second)}`", mean_std(c.summaries[0]), mean_std(c.summaries[1]),
            *_md_diff(c.diff)]


def _md_diff(d: dict) -> list[str]:
    """Δ, its CI (both bold when the CI excludes 0), p and the number of pairs of a `stats.paired` dict."""
    bold = "**" if stats.excludes_zero(d["diff_ci95_low"], d["diff_ci95_high"]) else ""
    return [f"{bold}{number(d['diff_mean'], signed=True)}{bold}",
            f"{bold}{interval(d['diff_ci95_low'], d['diff_ci95_high'], signed=True)}{bold}",
            p_value(d["p_value"]), str(d["n"])]


def _md_text(text: str) -> str:
    # `<class>` in a definition would be swallowed as an HTML tag; `|` would split a table cell
    return str(text).replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|").replace("\n", " ")


# ----------------------------------------------------------------------------------------------------- latex
def latex(results: StudyResults) -> str:
    """`results.tex`: a booktabs table (a block of rows per metric) and the notes as a comment block."""
    study = results.study
    unfinished = len(results.unfinished())
    caption = (f"Study \\texttt{{{tex_escape(study.name)}}}: mean $\\pm$ std over the finished seeds, 95\\,\\% "
               f"Student-t CI, paired difference $\\Delta$ vs \\texttt{{{tex_escape(study.baseline)}}} with its "
               f"95\\,\\% CI and paired t-test $p$; bold: the CI of $\\Delta$ excludes 0."
               + (f" {unfinished} of {len(results.runs)} runs did not finish and are not counted (see the notes)."
                  if unfinished else ""))
    lines = ["% Generated by seg_jax.studies.aggregate from the run directories; do not edit by hand.",
             "% Needs \\usepackage{booktabs}.", "\\begin{table}[t]", "\\centering", f"\\caption{{{caption}}}",
             f"\\label{{tab:study-{re.sub(r'[^A-Za-z0-9-]+', '-', study.name)}}}",
             "\\begin{tabular}{llrrrrrr}", "\\toprule",
             "Metric & Arm & $n$ & mean $\\pm$ std & 95\\,\\% CI & $\\Delta$ & 95\\,\\% CI of $\\Delta$ & $p$ \\\\"]
    for metric in study.metrics:
        lines.append("\\midrule")
        for row in (r for r in results.rows if r.metric == metric):
            lines.append(" & ".join(_tex_row(row, baseline=study.baseline)) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", "%"]
    if results.comparisons:
        lines += _tex_comparisons(results)
    if study.description:
        lines += ["% Description: " + study.description.replace("\n", " ")]
    for title, items in notes(results):
        lines += [f"% {title}:"] + [f"%   {label}: {text}".replace("\n", " ") for label, text in items]
    return "\n".join(lines) + "\n"


def _tex_row(row, *, baseline: str) -> list[str]:
    s = row.summary
    arm = tex_escape(row.arm) + (" (baseline)" if row.arm == baseline else "")
    cells = [tex_escape(row.metric), arm, str(s["n"]), _tex(mean_std(s)),
             _tex(interval(s["ci95_low"], s["ci95_high"]))]
    return cells + (["--"] * 3 if row.diff is None else _tex_diff(row.diff))


def _tex_diff(d: dict) -> list[str]:
    """Δ and its CI (bold when the CI excludes 0) and p of a `stats.paired` dict, as LaTeX cells."""
    diff = [_tex(number(d["diff_mean"], signed=True)),
            _tex(interval(d["diff_ci95_low"], d["diff_ci95_high"], signed=True))]
    if stats.excludes_zero(d["diff_ci95_low"], d["diff_ci95_high"]):
        diff = [f"\\textbf{{{cell}}}" for cell in diff]
    return diff + [_tex(p_value(d["p_value"]))]


def _tex_comparisons(results: StudyResults) -> list[str]:
    """A second booktabs table: one row per comparison, first − second paired by seed."""
    name = re.sub(r"[^A-Za-z0-9-]+", "-", results.study.name)
    lines = ["\\begin{table}[t]", "\\centering",
             f"\\caption{{Study \\texttt{{{tex_escape(results.study.name)}}}: paired comparisons, $\\Delta$ = first "
             "$-$ second over the seeds both finished, with its 95\\,\\% CI and paired t-test $p$; bold: the CI "
             "excludes 0.}", f"\\label{{tab:study-{name}-comparisons}}", "\\begin{tabular}{llrrrrrr}",
             "\\toprule", "First & Second & $n$ & first & second & $\\Delta$ & 95\\,\\% CI of $\\Delta$ & $p$ \\\\",
             "\\midrule"]
    for c in results.comparisons:
        lines.append(" & ".join([tex_escape(c.label(c.first)), tex_escape(c.label(c.second)), str(c.diff["n"]),
                                 _tex(mean_std(c.summaries[0])), _tex(mean_std(c.summaries[1])),
                                 *_tex_diff(c.diff)]) + " \\\\")
    return lines + ["\\bottomrule", "\\end{tabular}", "\\end{table}", "%"]


def _tex(cell: str) -> str:
    return "--" if cell == DASH else tex_escape(cell).replace("±", "$\\pm$")


def tex_escape(text: str) -> str:
    """`text` safe in LaTeX running text: `_ % & # $ { } ~ ^ \\` escaped."""
    special = {"\\": "\\textbackslash{}", "_": "\\_", "%": "\\%", "&": "\\&", "#": "\\#", "$": "\\$",
               "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}"}
    return "".join(special.get(ch, ch) for ch in str(text))


# ----------------------------------------------------------------------------------------------------- numbers
def number(x: float, *, signed: bool = False) -> str:
    """`x` rounded for a table: 4 decimals from 0.001 to 10⁵, else 3 significant digits in e-notation; NaN → —."""
    if not math.isfinite(x):
        return DASH if math.isnan(x) else f"{x:{'+' if signed else ''}}"
    sign = "+" if signed else ""
    return f"{x:{sign}.4f}" if x == 0 or 1e-3 <= abs(x) < 1e5 else f"{x:{sign}.3e}"


def mean_std(summary: dict) -> str:
    """"mean ± std"; the mean alone when std is undefined (one seed), — without a mean."""
    if math.isnan(summary["mean"]):
        return DASH
    std = "" if math.isnan(summary["std"]) else f" ± {number(summary['std'])}"
    return number(summary["mean"]) + std + (" (n=1)" if summary["n"] == 1 else "")


def interval(low: float, high: float, *, signed: bool = False) -> str:
    if math.isnan(low) or math.isnan(high):
        return DASH
    return f"[{number(low, signed=signed)}, {number(high, signed=signed)}]"


def p_value(p: float) -> str:
    return DASH if math.isnan(p) else f"{p:.3g}"


def _repr(x: float) -> str:
    return "" if math.isnan(x) else repr(float(x))

