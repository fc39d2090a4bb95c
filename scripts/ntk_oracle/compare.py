"""neural-tangents 0.6.5 oracle for bilevel_jax.ntk; runs in the pinned .venv-ntk-oracle env.

  make ntk-oracle
  # = scripts/ntk_oracle/build_env.sh && .venv-ntk-oracle/bin/python scripts/ntk_oracle/compare.py

1. Calls our main venv (scripts/ntk_oracle/ours.py) to featurize real FSDD clips, compute our
   NNGP/NTK and time it (compile excluded).
2. Builds the same WRN in neural-tangents' stax (no batch norm, no pooling, Flatten + Dense,
   stax default W_std = 1, b_std = 0), computes the kernels in float64 (reference values) and
   times nt's own float32 kernel (jit + nt.batch, compile excluded) on the same inputs and CPU.
3. Writes benchmarks/results/ntk_oracle.json.

With --activations (accuracy only, no timing; benchmarks/results/ntk_oracle_activations.json):
for ReLU and leaky ReLU (stax.LeakyRelu), each without and with a final activation before
Flatten + Dense, our float64 and float32 kernels against nt's float64 kernel, and how far the
legacy kernel (ReLU, no final activation) is from each of the others.

  .venv-ntk-oracle/bin/python scripts/ntk_oracle/compare.py --activations --n=64

neural_tangents/__init__.py imports neural_tangents.experimental, which needs tensorflow (only
for its tf2jax-based features); an empty module registered under that name before the import
keeps tensorflow out of the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
import types

sys.modules["neural_tangents.experimental"] = types.ModuleType("neural_tangents.experimental")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import neural_tangents as nt  # noqa: E402
from neural_tangents import stax  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]


def wrn_stax(
  depth: int,
  shortcut_size: int,
  widths=(16, 32, 64, 128),
  activation: str = "relu",
  leaky_slope: float = 0.1,
  final_activation: bool = False,
):
  """WRN-depth in stax, layout as in neural-tangents' WideResnet example minus pooling; with
  `final_activation` one more activation before Flatten + Dense."""
  phi = stax.Relu if activation == "relu" else (lambda: stax.LeakyRelu(leaky_slope))

  def block(ch, strides, conv_shortcut):
    main = stax.serial(
      phi(),
      stax.Conv(ch, (3, 3), strides, padding="SAME"),
      phi(),
      stax.Conv(ch, (3, 3), padding="SAME"),
    )
    short = (
      stax.Conv(ch, (shortcut_size, shortcut_size), strides, padding="SAME")
      if conv_shortcut
      else stax.Identity()
    )
    return stax.serial(stax.FanOut(2), stax.parallel(main, short), stax.FanInSum())

  def group(n, ch, strides):
    return stax.serial(block(ch, strides, True), *[block(ch, (1, 1), False) for _ in range(n - 1)])

  n = (depth - 4) // 6
  final = (phi(),) if final_activation else ()
  return stax.serial(
    stax.Conv(widths[0], (3, 3), padding="SAME"),
    group(n, widths[1], (1, 1)),
    group(n, widths[2], (2, 2)),
    group(n, widths[3], (2, 2)),
    *final,
    stax.Flatten(),
    stax.Dense(1, 1.0, 0.0),
  )


def errors(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return dict(
    rel_frobenius=float(np.linalg.norm(got - want) / np.linalg.norm(want)),
    max_abs_rel=float(np.max(np.abs(got - want) / np.abs(want))),
  )


def _portable(arg: str) -> str:
  """A command-line argument without this machine's absolute paths (for committed JSON)."""
  if arg.startswith("--ours_python=") and os.path.isabs(arg.split("=", 1)[1]):
    return "--ours_python=<main venv>/bin/python"
  return arg


def _write(path, res):
  out = pathlib.Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(res, indent=1) + "\n")
  os.replace(tmp, out)


def main_activations(a):
  """Accuracy of our kernels for both activations, with and without a final activation."""
  configs = [(act, final) for act in ("relu", "leaky_relu") for final in (False, True)]
  work, x, got = None, None, {}
  for act, final in configs:
    work = pathlib.Path(tempfile.mkdtemp(prefix="ntk_oracle_"))
    cmd = [
      a.ours_python,
      str(REPO / "scripts" / "ntk_oracle" / "ours.py"),
      f"--n={a.n}",
      f"--depth={a.depth}",
      f"--shortcut_size={a.shortcut_size}",
      "--reps=0",
      "--x64",
      f"--activation={act}",
      f"--leaky_slope={a.leaky_slope}",
      f"--final_activation={int(final)}",
      f"--workdir={work}",
    ]
    print("ours:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    x = np.load(work / "x.npy") if x is None else x
    np.testing.assert_array_equal(np.load(work / "x.npy"), x)
    got[act, final] = dict(np.load(work / "ours.npz"))
  jax.config.update("jax_enable_x64", True)
  x64 = x.astype(np.float64)
  want, cases = {}, {}
  for act, final in configs:
    _, _, kernel_fn = wrn_stax(
      a.depth, a.shortcut_size, activation=act, leaky_slope=a.leaky_slope, final_activation=final
    )
    fn = nt.batch(jax.jit(kernel_fn, static_argnames="get"), batch_size=a.nt_batch)
    k = fn(x64, x64, ("nngp", "ntk"))
    want[act, final] = dict(nngp=np.asarray(k.nngp), ntk=np.asarray(k.ntk))
    g = got[act, final]
    name = f"{act}_final{int(final)}"
    cases[name] = {
      f"ours_float64_{kk}": errors(g[kk + "64"], want[act, final][kk]) for kk in ("nngp", "ntk")
    }
    cases[name].update(
      {f"ours_float32_{kk}": errors(g[kk], want[act, final][kk]) for kk in ("nngp", "ntk")}
    )
    print(name, json.dumps(cases[name]), flush=True)
  legacy = want["relu", False]
  legacy_vs = {
    f"{act}_final{int(final)}": {
      kk: errors(legacy[kk], want[act, final][kk]) for kk in ("nngp", "ntk")
    }
    for act, final in configs
    if (act, final) != ("relu", False)
  }
  # Best single rescaling of the legacy kernel (a proxy is scale-free up to the inner l2).
  for (act, final), v in zip([c for c in configs if c != ("relu", False)], legacy_vs.values()):
    for kk in ("nngp", "ntk"):
      l, w = legacy[kk].ravel(), want[act, final][kk].ravel()
      c = float(l @ w / (l @ l))
      v[kk]["best_scale"] = c
      v[kk]["rel_frobenius_after_best_scale"] = float(np.linalg.norm(c * l - w) / np.linalg.norm(w))
  res = dict(
    command=".venv-ntk-oracle/bin/python scripts/ntk_oracle/compare.py "
    + " ".join(_portable(arg) for arg in sys.argv[1:]),
    inputs=f"{a.n} real FSDD train log-mels (bilevel_jax.audio.featurize), seed 0",
    architecture=dict(
      depth=a.depth,
      shortcut_size=a.shortcut_size,
      w_std=1.0,
      b_std=0.0,
      leaky_slope=a.leaky_slope,
      readout="[final activation] + Flatten + Dense(W_std=1, b_std=0)",
      batch_norm=False,
      pooling=False,
    ),
    reference="neural-tangents 0.6.5 stax (Relu / LeakyRelu(alpha)), float64, nt.batch",
    errors_vs_nt_float64=cases,
    legacy_kernel_vs_nt_float64=legacy_vs,
    versions=dict(
      oracle_jax=jax.__version__, neural_tangents="0.6.5", python=platform.python_version()
    ),
    machine=platform.processor() or platform.machine(),
    cpu_count=os.cpu_count(),
    loadavg_at_end=os.getloadavg(),
  )
  _write(a.out or REPO / "benchmarks" / "results" / "ntk_oracle_activations.json", res)
  print(json.dumps(dict(errors=cases, legacy=legacy_vs), indent=1))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--n", type=int, default=256, help="real FSDD log-mels (>= 16)")
  ap.add_argument("--depth", type=int, default=28)
  ap.add_argument("--shortcut_size", type=int, default=1)
  ap.add_argument("--nt_batch", type=int, default=16, help="nt.batch batch size (divides n)")
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--ours_python", default=str(REPO / ".venv" / "bin" / "python"))
  ap.add_argument(
    "--out",
    default=None,
    help="default benchmarks/results/ntk_oracle.json "
    "(ntk_oracle_activations.json with --activations)",
  )
  ap.add_argument(
    "--activations",
    action="store_true",
    help="accuracy of relu / leaky relu, with / without final activation",
  )
  ap.add_argument("--leaky_slope", type=float, default=0.1)
  a = ap.parse_args()
  if a.n < 16 or a.n % a.nt_batch:
    raise SystemExit(f"--n={a.n} must be >= 16 and divisible by --nt_batch={a.nt_batch}.")
  if not pathlib.Path(a.ours_python).exists():
    raise SystemExit(f"--ours_python={a.ours_python} not found; run `make setup` first.")
  if a.activations:
    return main_activations(a)
  a.out = a.out or str(REPO / "benchmarks" / "results" / "ntk_oracle.json")

  def run_ours():
    work = pathlib.Path(tempfile.mkdtemp(prefix="ntk_oracle_"))
    cmd = [
      a.ours_python,
      str(REPO / "scripts" / "ntk_oracle" / "ours.py"),
      f"--n={a.n}",
      f"--depth={a.depth}",
      f"--shortcut_size={a.shortcut_size}",
      f"--reps={a.reps}",
      f"--workdir={work}",
    ]
    print("ours:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    return work, json.loads((work / "ours.json").read_text())

  # Ours is timed before and after neural-tangents (the CPU is shared; load drifts), and the
  # two runs are averaged.
  work, ours_before = run_ours()
  x = np.load(work / "x.npy")
  ours = np.load(work / "ours.npz")

  _, _, kernel_fn = wrn_stax(a.depth, a.shortcut_size)
  batched = nt.batch(jax.jit(kernel_fn, static_argnames="get"), batch_size=a.nt_batch)
  run = lambda: jax.block_until_ready(batched(x, x, ("nngp", "ntk")))
  k32 = run()  # compile + warm up
  wall, cpu = [], []
  for _ in range(a.reps):
    t0, c0 = time.perf_counter(), time.process_time()
    run()
    wall.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
  nt_wall, nt_cpu = float(np.median(wall)), float(np.median(cpu))
  _, ours_after = run_ours()
  ours_t = {}
  for part in ("cross", "symmetric"):
    b, f = ours_before[part], ours_after[part]
    w, c = 0.5 * (b["wall_s"] + f["wall_s"]), 0.5 * (b["cpu_s"] + f["cpu_s"])
    ours_t[part] = dict(
      wall_s=w, cpu_s=c, entries_per_s=a.n * a.n / w, entries_per_cpu_s=a.n * a.n / c, runs=[b, f]
    )
  ours_t["jax"] = ours_before["jax"]
  jax.config.update("jax_enable_x64", True)
  k64 = jax.jit(kernel_fn, static_argnames="get")(
    x.astype(np.float64), x.astype(np.float64), ("nngp", "ntk")
  )

  entries = a.n * a.n
  nt_rate = entries / nt_wall
  res = dict(
    command="make ntk-oracle  (= scripts/ntk_oracle/build_env.sh && .venv-ntk-oracle/bin/python "
    "scripts/ntk_oracle/compare.py " + " ".join(sys.argv[1:]) + ")",
    inputs=f"{a.n} real FSDD train log-mels (bilevel_jax.audio.featurize), seed 0",
    architecture=dict(
      depth=a.depth,
      shortcut_size=a.shortcut_size,
      w_std=1.0,
      b_std=0.0,
      readout="Flatten + Dense(W_std=1, b_std=0)",
      batch_norm=False,
      pooling=False,
    ),
    errors_vs_nt_float64=dict(
      ours_float32_ntk=errors(ours["ntk"], k64.ntk),
      ours_float32_nngp=errors(ours["nngp"], k64.nngp),
      nt_float32_ntk=errors(k32.ntk, k64.ntk),
      nt_float32_nngp=errors(k32.nngp, k64.nngp),
    ),
    errors_ours_vs_nt_float32=dict(
      ntk=errors(ours["ntk"], k32.ntk), nngp=errors(ours["nngp"], k32.nngp)
    ),
    timing=dict(
      note="same inputs and CPU, one run, compile excluded, median of reps; both kernels "
      "(nngp and ntk) of all n x n pairs; ours = mean of a run before and one after nt. "
      "The CPU is shared with other jobs: wall ratios drift with load, process-CPU-time "
      "ratios are the steadier measure. cross = k(x, x) with no symmetry used; "
      "symmetric = only tiles on/above the diagonal, mirrored.",
      entries=entries,
      neural_tangents=dict(
        wall_s=nt_wall,
        cpu_s=nt_cpu,
        entries_per_s=nt_rate,
        entries_per_cpu_s=entries / nt_cpu,
        nt_batch=a.nt_batch,
      ),
      ours_cross=ours_t["cross"],
      ours_symmetric=ours_t["symmetric"],
      speedup_cross_wall=ours_t["cross"]["entries_per_s"] / nt_rate,
      speedup_cross_cpu=ours_t["cross"]["entries_per_cpu_s"] / (entries / nt_cpu),
      speedup_symmetric_wall=ours_t["symmetric"]["entries_per_s"] / nt_rate,
      speedup_symmetric_cpu=ours_t["symmetric"]["entries_per_cpu_s"] / (entries / nt_cpu),
      loadavg_at_end=os.getloadavg(),
      cpu_count=os.cpu_count(),
      machine=platform.processor() or platform.machine(),
    ),
    versions=dict(
      oracle_jax=jax.__version__,
      neural_tangents="0.6.5",
      ours_jax=ours_t["jax"],
      python=platform.python_version(),
    ),
  )
  out = pathlib.Path(a.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(res, indent=1) + "\n")
  os.replace(tmp, out)
  print(
    json.dumps(
      dict(
        errors=res["errors_vs_nt_float64"],
        timing={k: v for k, v in res["timing"].items() if k.startswith("speedup")},
      ),
      indent=1,
    )
  )


if __name__ == "__main__":
  main()
