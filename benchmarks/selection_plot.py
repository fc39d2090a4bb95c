"""Tables (markdown) and a plot from `selection_speed` result JSONs; reads results only.

  python -m benchmarks.selection_plot benchmarks/results/selection_cpu_quick.json \
      benchmarks/results/selection_h100.json --png=benchmarks/results/selection_speed.png
"""

from __future__ import annotations

import argparse
import json
import pathlib


def _label(r):
  return (
    f"{r['device_kind']} ({r.get('cpu_affinity', r.get('cpu_count'))} cores)"
    if r["platform"] == "cpu"
    else r["device_kind"]
  )


def table(r) -> str:
  rows = [
    "| P | m | c | ours total s | compile s | inner | outer grad | CG | scoring | "
    "NumPy s (x) | repr. all s (x) | repr. 200 s | picks = NumPy | picks = repr. all "
    "| peak RSS GiB |",
    "|" + "---|" * 15,
  ]
  for cfg in r["configs"]:
    if "error" in cfg:
      rows.append(f"| {cfg['pool']} | {cfg['m']} | {cfg['c']} | error |" + " |" * 11)
      continue
    o, st = cfg["ours"], cfg.get("ours_stages", {})
    stage = lambda k: f"{st[k]['per_selection_s']:.3g}" if k in st else "-"
    npy = cfg.get("numpy")
    ra = cfg.get("representer_all", {})
    r2 = next(
      (v for k, v in cfg.items() if k.startswith("representer_") and k != "representer_all"), {}
    )
    fmt = lambda e: (
      f"{e['total_s']:.3g} ({e['total_s'] / o['total_s']:.1f}x)" if e and "total_s" in e else "-"
    )
    rows.append(
      f"| {cfg['pool']} | {cfg['m']} | {cfg['c']} | {o['total_s']:.3g} | {o['compile_s']:.3g} | "
      f"{stage('inner')} | {stage('outer_grad')} | {stage('cg')} | {stage('scoring')} | "
      f"{fmt(npy)} | {fmt(ra)} | {r2.get('total_s', float('nan')):.3g} | "
      f"{npy['picks_agree'] if npy else '-'}/9 | "
      f"{ra['picks_agree'] if 'picks_agree' in ra else '-'}/9 | "
      f"{cfg.get('rss_gib_after_ours', float('nan')):.2f} |"
    )
  return "\n".join(rows)


def stage_table(r) -> str:
  rows = [
    "| P | m | c | stage | ours s | NumPy s | NumPy / ours |",
    "|---|---|---|---|---|---|---|",
  ]
  for cfg in r["configs"]:
    if "numpy" not in cfg or "ours_stages" not in cfg:
      continue
    for k in ("inner", "outer_grad", "cg", "scoring"):
      o = cfg["ours_stages"][k]["per_selection_s"]
      n = cfg["numpy"]["stages_s"][k]
      rows.append(
        f"| {cfg['pool']} | {cfg['m']} | {cfg['c']} | {k} | {o:.3g} | {n:.3g} | {n / o:.1f} |"
      )
  return "\n".join(rows)


def anchor_table(a, path) -> str:
  """Markdown rows of a `selection_anchor` result: per round, theirs vs ours."""
  rows = [
    f"`{path}` (`{a['command']}`; ours on cores {a.get('cores_ours')}):",
    "",
    "| round | load avg | authors' PyTorch s (1 thread) | (2 threads) | ours, batch 64 s (x) "
    "| ours, full bank s (x) |",
    "|---|---|---|---|---|---|",
  ]
  for e in a["rounds"]:
    t1 = e.get("authors_torch_threads1", {}).get("total_s")
    t2 = e.get("authors_torch_threads2", {}).get("total_s")
    f = lambda v: f"{v:.3g}" if v is not None else "-"
    rows.append(
      f"| {e['round']} | {e['loadavg'][0]:.1f} | {f(t1)} | {f(t2)} | "
      f"{e['ours_minibatch64_s']:.3g} ({e.get('speedup_ours_minibatch64', 0):.1f}x) | "
      f"{e['ours_fullbank_s']:.3g} ({e.get('speedup_ours_fullbank', 0):.1f}x) |"
    )
  return "\n".join(rows)


def plot(results, png, names, anchors=()):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from bilevel_jax.utils import io

  fig, axes = plt.subplots(1, 3 if anchors else 2, figsize=(16 if anchors else 11, 4))
  for r, name in zip(results, names):
    lab = f"{name}: {_label(r)}"
    for c, marker in ((10, "o"), (35, "s")):
      cfgs = sorted(
        [x for x in r["configs"] if "ours" in x and x["m"] == 2000 and x["c"] == c],
        key=lambda x: x["pool"],
      )
      if not cfgs:
        continue
      ps = [x["pool"] for x in cfgs]
      axes[0].plot(
        ps, [x["ours"]["total_s"] for x in cfgs], marker=marker, label=f"ours, c={c}, {lab}"
      )
      npy = [(x["pool"], x["numpy"]["total_s"]) for x in cfgs if "numpy" in x]
      if npy:
        axes[0].plot(*zip(*npy), marker=marker, ls="--", label=f"NumPy/SciPy, c={c}, {lab}")
      rep = [
        (x["pool"], x["representer_all"]["total_s"])
        for x in cfgs
        if "total_s" in x.get("representer_all", {})
      ]
      if rep:
        axes[0].plot(*zip(*rep), marker=marker, ls=":", label=f"representer, c={c}, {lab}")
      mem = [
        (x["pool"], x.get("device_peak_gib_after_ours", x.get("rss_gib_after_ours"))) for x in cfgs
      ]
      axes[1].plot(*zip(*mem), marker=marker, label=f"c={c}, {lab}")
  axes[0].set(
    xscale="log",
    yscale="log",
    xlabel="pool size P",
    ylabel="seconds for b = 10",
    title="selection time (m = 2000, 1000 Adam steps, 30 CG)",
  )
  axes[1].set(
    xscale="log",
    xlabel="pool size P",
    ylabel="GiB",
    title="peak memory (RSS on CPU, device peak on GPU)",
  )
  if anchors:
    labels, vals = [], []
    for a, name in anchors:
      sm = a.get("summary", {})
      tag = "1 core" if len(a.get("cores_ours", [0, 0])) == 1 else "all cores"
      if "authors_torch_s" in sm and not labels:
        labels.append("authors' PyTorch\n(1 thread)")
        vals.append(sm["authors_torch_s"])
      for k, lab in (
        ("ours_minibatch64_s", "ours, batch 64"),
        ("ours_fullbank_s", "ours, full bank"),
      ):
        if k in sm:
          labels.append(f"{lab}\n({tag})")
          vals.append(sm[k])
    axes[2].bar(range(len(vals)), vals, color=["C3"] + ["C0"] * (len(vals) - 1))
    axes[2].set_xticks(range(len(vals)), labels, fontsize=6)
    axes[2].set(
      ylabel="seconds for b = 10 (median over rounds)",
      title="FSDD anchor, same CPU, same run (P = 2690, m = 2000)",
    )
  for ax in axes[:2]:
    ax.legend(fontsize=6)
  for ax in axes:
    ax.grid(alpha=0.3)
  fig.tight_layout()
  io.atomic_savefig(fig, png, dpi=120)


def main(argv=None):
  ap = argparse.ArgumentParser()
  ap.add_argument("results", nargs="+")
  ap.add_argument("--png", default=None)
  ap.add_argument(
    "--anchor",
    action="append",
    default=[],
    help="selection_anchor result JSON (repeatable): a third panel and a table",
  )
  args = ap.parse_args(argv)
  results = []
  for path in args.results:
    p = pathlib.Path(path)
    if not p.is_file():
      raise SystemExit(f"result file {p} does not exist")
    results.append(json.loads(p.read_text()))
  for path, r in zip(args.results, results):
    print(f"\n### {path}: {_label(r)}, `{r['command']}`\n")
    print(table(r))
    print()
    print(stage_table(r))
  anchors = []
  for path in args.anchor:
    if not pathlib.Path(path).is_file():
      raise SystemExit(f"anchor result file {path} does not exist")
    anchors.append((json.loads(pathlib.Path(path).read_text()), path))
    print()
    print(anchor_table(*anchors[-1]))
  if args.png:
    plot(
      results,
      args.png,
      [pathlib.Path(p).stem.replace("selection_", "") for p in args.results],
      anchors,
    )
    print(f"\nwrote {args.png}")


if __name__ == "__main__":
  main()
