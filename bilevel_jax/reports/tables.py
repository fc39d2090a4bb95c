"""Table 1 from AL result JSON files only: mean +- std test accuracy per strategy and budget,
and paired differences of one strategy against the others (same seeds)."""

from __future__ import annotations

import collections
import json
import math
import pathlib
from typing import Any, Iterable, NamedTuple

import numpy as np

from bilevel_jax.al import results as results_lib
from bilevel_jax.utils import io

# Display order and names of the paper's Table 1.
ORDER = ("uniform", "max_entropy", "kcenter", "consistency", "bilevel")
DISPLAY = {
  "uniform": "Uniform",
  "max_entropy": "Max-Entropy",
  "kcenter": "k-center",
  "consistency": "Consistency",
  "bilevel": "Bilevel",
}


class Cell(NamedTuple):
  """Accuracy (%) over seeds at one (strategy, number of labels)."""

  mean: float
  std: float  # sample standard deviation (ddof=1); 0 for one seed (shown as "--")
  n: int  # seeds that completed this round
  values: tuple[float, ...]


def load_results(sources: Iterable[str | pathlib.Path]) -> list[dict[str, Any]]:
  """Reads result JSONs; a folder contributes every `*_seed*.json` in it."""
  files = []
  for src in sources:
    src = pathlib.Path(src)
    if not src.exists():
      raise FileNotFoundError(
        f"Result path {src} does not exist (expected a result JSON or a folder of them)."
      )
    files += sorted(src.glob("*_seed*.json")) if src.is_dir() else [src]
  records, seen = [], {}
  for f in files:
    rec = io.read_json(f)
    if rec.get("format") != results_lib.FORMAT:
      raise ValueError(
        f"{f} is not an AL result file (format {rec.get('format')!r}, expected "
        f"{results_lib.FORMAT!r})."
      )
    # The same seed twice (a file given on its own and in its folder, or two workdirs) would
    # count as two seeds in the mean and std.
    key = (rec["dataset"], rec["strategy"], rec["seed"])
    if key in seen:
      raise ValueError(
        f"{f} and {seen[key]} are both results of (dataset, strategy, seed) = "
        f"{key}; pass each seed once."
      )
    seen[key] = f
    rec["_path"] = str(f)
    records.append(rec)
  if not records:
    raise ValueError(f"No AL result files found in {[str(s) for s in sources]}.")
  return records


class Variant(NamedTuple):
  """One strategy of another run, shown under its own name next to a run's strategies (a
  selection variant or an ablation run on the same seeds and pools)."""

  source: str | pathlib.Path  # its result folder or JSON
  strategy: str  # the strategy recorded in its files
  name: str  # the row's name in tables, figures and paired comparisons


def parse_variant(text: str) -> Variant:
  """`PATH:STRATEGY:NAME` (the name may hold colons) -> Variant; ValueError naming the text."""
  parts = text.split(":", 2)
  if len(parts) != 3 or not all(p.strip() for p in parts):
    raise ValueError(
      f"--variant={text!r}: expected PATH:STRATEGY:NAME, e.g. "
      "results/active_learning/fsdd_cpu_bilevel_embed_exact:bilevel_embed:Bilevel-embed."
    )
  return Variant(parts[0], parts[1], parts[2])


def load_variant(variant: Variant) -> list[dict[str, Any]]:
  """The records of `variant.strategy` in `variant.source`, renamed `variant.name`."""
  records = [r for r in load_results([variant.source]) if r["strategy"] == variant.strategy]
  if not records:
    raise ValueError(f"{variant.source} has no results of strategy {variant.strategy!r}.")
  return [dict(r, strategy=variant.name, _variant=variant.name) for r in records]


def with_variants(
  records: list[dict[str, Any]], variants: Iterable[Variant]
) -> list[dict[str, Any]]:
  """`records` plus every variant's renamed records; ValueError when a name is taken or the
  datasets differ."""
  out = list(records)
  for variant in variants:
    taken = {r["strategy"] for r in out}
    if variant.name in taken:
      raise ValueError(
        f"Variant name {variant.name!r} is already a strategy of the results {sorted(taken)}."
      )
    out += load_variant(variant)
  datasets = {r["dataset"] for r in out}
  if len(datasets) > 1:
    raise ValueError(
      f"The results and variants hold different datasets {sorted(datasets)}: "
      + ", ".join(sorted({f"{r['_path']} ({r['dataset']})" for r in out})[:4])
    )
  return out


def strategy_order(names: Iterable[str]) -> list[str]:
  names = set(names)
  return [n for n in ORDER if n in names] + sorted(names - set(ORDER))


def aggregate(records: list[dict[str, Any]]) -> dict[str, dict[int, Cell]]:
  """{strategy: {num_labeled: Cell}} over seeds, from completed rounds only."""
  datasets = {r["dataset"] for r in records}
  if len(datasets) > 1:
    raise ValueError(f"Results mix datasets {sorted(datasets)}; aggregate one dataset at a time.")
  # Seeds of one row group must come from one experiment (the entries a resume may change
  # aside); a variant (`with_variants`) is an experiment of its own.
  configs = collections.defaultdict(dict)
  for rec in records:
    config = results_lib.upgrade_config(rec.get("config", {}))  # older records: current names
    configs[rec.get("_variant")].setdefault(
      json.dumps(results_lib.comparable_config(config), sort_keys=True),
      rec.get("_path", rec["strategy"]),
    )
  for group in configs.values():
    if len(group) > 1:
      raise ValueError(
        f"Results come from {len(group)} different configs (e.g. "
        f"{list(group.values())[:2]}); aggregate one experiment at a time."
      )
  acc: dict[str, dict[int, list[float]]] = collections.defaultdict(
    lambda: collections.defaultdict(list)
  )
  for rec in records:
    for rnd in rec["rounds"]:
      acc[rec["strategy"]][int(rnd["num_labeled"])].append(100.0 * float(rnd["test_accuracy"]))
  out = {}
  for name in strategy_order(acc):
    out[name] = {}
    for n_lab in sorted(acc[name]):
      v = np.asarray(acc[name][n_lab])
      std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
      out[name][n_lab] = Cell(float(v.mean()), std, len(v), tuple(float(x) for x in v))
  return out


def _fmt(cell: Cell | None, latex: bool = False, show_n: bool = False) -> str:
  if cell is None:
    return "--"
  pm = r" $\pm$ " if latex else " ± "
  # One seed has no spread: "± 0.00" would read as a zero-variance result.
  std = f"{cell.std:.2f}" if cell.n > 1 else "--"
  text = f"{cell.mean:.2f}{pm}{std}"
  if show_n:
    text += f" (n={cell.n})"
  return text


def final_budget(records: list[dict[str, Any]]) -> int:
  return max(int(r["schedule"][-1]) for r in records)


def table1_markdown(table: dict[str, dict[int, Cell]], budget: int, dataset: str) -> str:
  """Accuracy (%) at the final budget, one row per strategy (n = seeds that reached it)."""
  lines = [f"| method | {dataset} @ {budget} labels | seeds |", "|---|---|---|"]
  for name, cells in table.items():
    cell = cells.get(budget)
    lines.append(f"| {DISPLAY.get(name, name)} | {_fmt(cell)} | {cell.n if cell else 0} |")
  return "\n".join(lines)


def table1_latex(table: dict[str, dict[int, Cell]], budget: int, dataset: str) -> str:
  """LaTeX of `table1_markdown` (accuracy % at the final budget, seeds that reached it)."""
  lines = [
    r"\begin{tabular}{lcc}",
    r"\toprule",
    rf"Method & {dataset} ({budget} labels) & seeds \\",
    r"\midrule",
  ]
  for name, cells in table.items():
    cell = cells.get(budget)
    lines.append(
      rf"{DISPLAY.get(name, name)} & {_fmt(cell, latex=True)} & "
      rf"{cell.n if cell else 0} \\"
    )
  lines += [r"\bottomrule", r"\end{tabular}"]
  return "\n".join(lines)


def rounds_markdown(table: dict[str, dict[int, Cell]]) -> str:
  """Accuracy (%) mean ± std (n seeds) at every number of labels."""
  budgets = sorted({b for cells in table.values() for b in cells})
  lines = [
    "| method | " + " | ".join(str(b) for b in budgets) + " |",
    "|---|" + "---|" * len(budgets),
  ]
  for name, cells in table.items():
    lines.append(
      f"| {DISPLAY.get(name, name)} | "
      + " | ".join(_fmt(cells.get(b), show_n=True) for b in budgets)
      + " |"
    )
  return "\n".join(lines)


def rounds_latex(table: dict[str, dict[int, Cell]]) -> str:
  """LaTeX of `rounds_markdown`."""
  budgets = sorted({b for cells in table.values() for b in cells})
  lines = [
    r"\begin{tabular}{l" + "c" * len(budgets) + "}",
    r"\toprule",
    "Method & " + " & ".join(str(b) for b in budgets) + r" \\",
    r"\midrule",
  ]
  for name, cells in table.items():
    lines.append(
      f"{DISPLAY.get(name, name)} & "
      + " & ".join(_fmt(cells.get(b), latex=True, show_n=True) for b in budgets)
      + r" \\"
    )
  lines += [r"\bottomrule", r"\end{tabular}"]
  return "\n".join(lines)


class PairedCell(NamedTuple):
  """Reference minus baseline accuracy (points) over the seeds both completed."""

  mean_diff: float
  wins: int  # seeds where the reference is more accurate
  losses: int
  ties: int
  sign_p: float  # two-sided exact sign test over the non-tied seeds


def sign_test_p(wins: int, losses: int) -> float:
  """Two-sided exact binomial (p = 1/2) p-value of `wins` against `losses`; 1.0 for no pairs."""
  n = wins + losses
  if n == 0:
    return 1.0
  k = min(wins, losses)
  tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
  return min(1.0, 2.0 * tail)


def _paired_cell(diffs: list[float]) -> PairedCell:
  d = np.asarray(diffs)
  wins, losses = int((d > 0).sum()), int((d < 0).sum())
  return PairedCell(
    float(d.mean()), wins, losses, int(d.size - wins - losses), sign_test_p(wins, losses)
  )


def paired(
  records: list[dict[str, Any]], reference: str = "bilevel"
) -> dict[str, dict[int | str, PairedCell]]:
  """{baseline: {num_labeled: PairedCell, "after_first": PairedCell}} for `reference` vs every
  other strategy, pairing the seeds that share a seed number (same initial pool and streams).

  The first round is left out (every strategy starts from the same pool). "after_first" pools
  every (seed, round) pair after it; pairs of one seed are not independent, so its sign test is
  only indicative.
  """
  acc: dict[str, dict[int, dict[int, float]]] = collections.defaultdict(
    lambda: collections.defaultdict(dict)
  )
  for rec in records:
    for rnd in rec["rounds"]:
      acc[rec["strategy"]][int(rnd["num_labeled"])][int(rec["seed"])] = 100.0 * float(
        rnd["test_accuracy"]
      )
  if reference not in acc:
    return {}
  first = min(acc[reference])
  out = {}
  for base in strategy_order(acc):
    if base == reference:
      continue
    cells, pooled = {}, []
    for n_lab in sorted(set(acc[reference]) & set(acc[base])):
      if n_lab == first:
        continue
      seeds = sorted(set(acc[reference][n_lab]) & set(acc[base][n_lab]))
      diffs = [acc[reference][n_lab][s] - acc[base][n_lab][s] for s in seeds]
      if diffs:
        cells[n_lab] = _paired_cell(diffs)
        pooled += diffs
    if pooled:
      cells["after_first"] = _paired_cell(pooled)
      out[base] = cells
  return out


def paired_markdown(
  table: dict[str, dict[int | str, PairedCell]], reference: str = "bilevel"
) -> str:
  """Mean difference in points with wins-losses(-ties) per number of labels and pooled."""
  budgets = sorted({b for cells in table.values() for b in cells if b != "after_first"})
  ref = DISPLAY.get(reference, reference)
  lines = [
    f"| {ref} vs | "
    + " | ".join(str(b) for b in budgets)
    + " | all rounds after the first | sign test p (pooled) |",
    "|---|" + "---|" * (len(budgets) + 2),
  ]

  def fmt(c: PairedCell | None) -> str:
    if c is None:
      return "--"
    ties = f"-{c.ties}" if c.ties else ""
    return f"{c.mean_diff:+.1f} ({c.wins}-{c.losses}{ties})"

  for base, cells in table.items():
    pooled = cells["after_first"]
    lines.append(
      f"| {DISPLAY.get(base, base)} | "
      + " | ".join(fmt(cells.get(b)) for b in budgets)
      + f" | {fmt(pooled)} | {pooled.sign_p:.2g} |"
    )
  return "\n".join(lines)


def cells_json(table: dict[str, dict[Any, NamedTuple]]) -> dict[str, dict[str, dict]]:
  """{row: {column: cell}} of Cells or PairedCells as JSON-ready dicts (column keys as str)."""
  return {
    row: {str(col): cell._asdict() for col, cell in cells.items()} for row, cells in table.items()
  }
