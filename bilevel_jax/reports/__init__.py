"""Table 1, paired comparisons and Figures 2-3 from AL result files (`write_report` writes
them all)."""

from __future__ import annotations

import pathlib
from typing import Any, Iterable, Sequence

from bilevel_jax.al import results as results_lib
from bilevel_jax.reports import figures
from bilevel_jax.reports import pick_rates
from bilevel_jax.reports import tables
from bilevel_jax.utils import io

__all__ = ["figures", "pick_rates", "tables", "write_report"]


def write_report(
  sources: Iterable[str | pathlib.Path],
  outdir: str | pathlib.Path,
  *,
  command: str = "",
  figure2_strategy: str = "bilevel",
  figure2_seed: int = 0,
  with_figure2: bool = True,
  reference: str = "bilevel",
  variants: Sequence[tables.Variant] = (),
) -> dict[str, Any]:
  """Writes table1.{md,tex}, table_rounds.tex, paired.md (`reference` against each other
  strategy, seed by seed), figure3.png, table1.json, pick_rates.{png,json} (misclassified-pick
  vs pool error rate per round, when rounds record them) and, when the
  round-0 file of (figure2_strategy, figure2_seed) exists next to its JSON or its t-SNE points
  were written earlier (to outdir or to `report/` next to the JSON), figure2.png with
  figure2_counts.json and figure2_points.json. Returns the paths and the markdown tables.

  `variants` (`tables.Variant`: a strategy of another run under its own name, e.g. a
  selection variant on the same seeds) add their rows to every table and figure, and paired.md
  a section per variant against every other strategy.
  """
  records = tables.with_variants(tables.load_results(sources), variants)
  table = tables.aggregate(records)
  dataset = records[0]["dataset"]
  budget = tables.final_budget(records)
  outdir = pathlib.Path(outdir)
  outdir.mkdir(parents=True, exist_ok=True)
  md = tables.table1_markdown(table, budget, dataset)
  rounds_md = tables.rounds_markdown(table)
  (outdir / "table1.md").write_text(
    md + "\n\nEvery round (mean ± sample std (ddof=1) over seeds, n = seeds; -- = one "
    "seed):\n\n" + rounds_md + "\n"
  )
  (outdir / "table1.tex").write_text(tables.table1_latex(table, budget, dataset) + "\n")
  (outdir / "table_rounds.tex").write_text(tables.rounds_latex(table) + "\n")
  summary = {
    "command": command,
    "dataset": dataset,
    "final_budget": budget,
    "sources": sorted(r["_path"] for r in records),
    "accuracy_percent": tables.cells_json(table),
  }
  if variants:
    summary["variants"] = [[str(v.source), v.strategy, v.name] for v in variants]
  sections = []
  for i, ref in enumerate([reference] + [v.name for v in variants]):
    pairs = tables.paired(records, ref)
    if not pairs:
      continue
    sections.append(tables.paired_markdown(pairs, ref))
    if i == 0:
      summary["paired"] = {"reference": ref, "vs": tables.cells_json(pairs)}
    else:
      summary.setdefault("paired_variants", {})[ref] = tables.cells_json(pairs)
  paired_md = "\n\n".join(sections)
  if paired_md:
    names = [tables.DISPLAY.get(r, r) for r in [reference] + [v.name for v in variants]]
    who = (
      f"{names[0]} minus each baseline"
      if len(names) == 1
      else f"{', '.join(names)}: each minus every other strategy"
    )
    (outdir / "paired.md").write_text(
      f"{who}, test accuracy points, "
      "same seeds: mean difference (wins-losses[-ties] over seeds). The pooled column pairs "
      "every (seed, round) after the first; rounds of one seed are not independent, so its "
      "sign test is indicative only.\n\n" + paired_md + "\n"
    )
  io.atomic_write_json(outdir / "table1.json", summary)
  fig3 = figures.figure3(
    table,
    outdir / "figure3.png",
    title=f"{dataset}: test accuracy vs labels\n{figures.spread_description(table)}",
  )
  out = {
    "table_markdown": md,
    "rounds_markdown": rounds_md,
    "paired_markdown": paired_md,
    "figure3": str(fig3),
    "table1": str(outdir / "table1.md"),
  }
  rates = pick_rates.collect(records)
  if rates:  # rounds without pick statistics are skipped; no file when none has them
    io.atomic_write_json(outdir / "pick_rates.json", {"command": command, "strategies": rates})
    out["pick_rates"] = str(
      pick_rates.plot(rates, outdir / "pick_rates.png", title=f"{dataset}: where the picks go")
    )
  if with_figure2:
    fig2 = _figure2(records, outdir, figure2_strategy, figure2_seed, command)
    if fig2 is not None:
      out["figure2"] = str(outdir / "figure2.png")
      out["figure2_counts"] = fig2
  return out


def _figure2(
  records, outdir: pathlib.Path, strategy: str, seed: int, command: str
) -> dict[str, Any] | None:
  """Figure 2 of (strategy, seed) from its round-0 file when it is there (writing
  figure2_points.json; the t-SNE is reused while the points' `inputs_sha256` matches the file),
  else from a figure2_points.json of that same round-0 file in outdir or in `report/` next to
  the result JSON (the committed copy); None when neither exists."""
  rec = next((r for r in records if r["strategy"] == strategy and r["seed"] == seed), None)
  if rec is None:
    return None
  folder = pathlib.Path(rec["_path"]).parent
  npz = results_lib.figure2_path(folder, rec["dataset"], strategy, seed)
  points_path = outdir / "figure2_points.json"
  points = None
  if npz.exists():
    stored = io.read_json(points_path) if points_path.exists() else {}
    if stored.get("inputs_sha256") == figures.figure2_inputs_sha256(npz):
      points = stored  # same round-0 file and t-SNE settings: skip the t-SNE (~40 s on 2 cores)
    else:
      points = figures.figure2_points(npz)
  else:
    # Points of another (strategy, seed) or dataset must not stand in for the requested ones.
    for candidate in (points_path, folder / "report" / "figure2_points.json"):
      if candidate.exists():
        stored = io.read_json(candidate)
        if pathlib.Path(stored.get("source", "")).name == npz.name:
          points = stored
          break
  if points is None:
    return None
  io.atomic_write_json(points_path, points)
  figures.plot_figure2(points, outdir / "figure2.png")
  counts = dict(points["counts"], source=points["source"], command=command)
  io.atomic_write_json(outdir / "figure2_counts.json", counts)
  return counts
