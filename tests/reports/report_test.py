"""Table 1 / Figures 2-3 from synthetic result files (numbers checked against NumPy)."""

import pathlib
import tempfile

from absl.testing import absltest
import numpy as np

from bilevel_jax import reports
from bilevel_jax.al import results
from bilevel_jax.reports import figures
from bilevel_jax.reports import tables
from bilevel_jax.utils import io


def _write_results(
  workdir: pathlib.Path, accs: dict[str, np.ndarray], schedule=(10, 20, 30), config=None
) -> dict[str, np.ndarray]:
  """accs[strategy]: (seeds, rounds) accuracies in [0, 1]; a NaN ends a seed early."""
  for name, table in accs.items():
    for seed, row in enumerate(table):
      rec = results.new_record(
        dataset="fsdd",
        strategy=name,
        seed=seed,
        command="test",
        config=dict(config or {}, strategy=name, seed=seed),
        train_size=100,
        test_size=30,
        num_classes=10,
        schedule=list(schedule),
        initial_indices=np.arange(10),
      )
      for r, acc in enumerate(row):
        if np.isnan(acc):
          break
        rec["rounds"].append(
          {"round": r, "num_labeled": schedule[r], "test_accuracy": acc, "picks": None}
        )
      rec["complete"] = len(rec["rounds"]) == len(schedule)
      results.save(results.result_path(workdir, "fsdd", name, seed), rec)
  return accs


class TablesTest(absltest.TestCase):
  def test_mean_std_and_partial_seeds(self):
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="al_report_test"))
    rng = np.random.default_rng(0)
    uni = rng.uniform(0.5, 0.9, (3, 3))
    bil = rng.uniform(0.5, 0.9, (3, 3))
    bil[2, 2] = np.nan  # seed 2 has not finished the last round
    _write_results(tmp, {"uniform": uni, "bilevel": bil})
    table = tables.aggregate(tables.load_results([tmp]))
    self.assertEqual(list(table), ["uniform", "bilevel"])  # paper order
    cell = table["uniform"][30]
    self.assertAlmostEqual(cell.mean, 100 * uni[:, 2].mean(), places=9)
    self.assertAlmostEqual(cell.std, 100 * uni[:, 2].std(ddof=1), places=9)
    self.assertEqual(table["bilevel"][30].n, 2)
    self.assertAlmostEqual(table["bilevel"][30].mean, 100 * bil[:2, 2].mean(), places=9)
    md = tables.table1_markdown(table, 30, "fsdd")
    self.assertIn(
      f"| Uniform | {100 * uni[:, 2].mean():.2f} ± {100 * uni[:, 2].std(ddof=1):.2f} | 3 |", md
    )
    self.assertIn(r"$\pm$", tables.table1_latex(table, 30, "fsdd"))
    rounds = tables.rounds_markdown(table)
    self.assertIn(f"{100 * bil[:, 0].mean():.2f}", rounds)
    self.assertIn("(n=2)", rounds)

  def test_rejects_other_files_and_mixed_datasets(self):
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="al_report_test"))
    io.atomic_write_json(tmp / "x_seed0.json", {"format": "other"})
    with self.assertRaisesRegex(ValueError, "not an AL result file"):
      tables.load_results([tmp])
    (tmp / "empty").mkdir()
    with self.assertRaisesRegex(ValueError, "No AL result files"):
      tables.load_results([tmp / "empty"])
    with self.assertRaisesRegex(FileNotFoundError, "does not exist"):
      tables.load_results([tmp / "missing"])
    recs = [
      {"dataset": "fsdd", "strategy": "a", "rounds": []},
      {"dataset": "speech_commands", "strategy": "a", "rounds": []},
    ]
    with self.assertRaisesRegex(ValueError, "mix datasets"):
      tables.aggregate(recs)

  def test_a_seed_counts_once_and_configs_do_not_mix(self):
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="al_report_test"))
    _write_results(tmp / "a", {"uniform": np.full((2, 3), 0.5)}, config={"train": {"steps": 5}})
    with self.assertRaisesRegex(ValueError, r"\('fsdd', 'uniform', 0\); pass each seed once"):
      tables.load_results([tmp / "a", tmp / "a" / "fsdd_uniform_seed0.json"])
    _write_results(tmp / "b", {"bilevel": np.full((1, 3), 0.5)}, config={"train": {"steps": 6}})
    with self.assertRaisesRegex(ValueError, "2 different configs"):
      tables.aggregate(tables.load_results([tmp / "a", tmp / "b"]))
    # Entries a resume may change (here the display flag) do not split an experiment.
    _write_results(
      tmp / "c", {"bilevel": np.full((1, 3), 0.5)}, config={"train": {"steps": 5}, "progress": True}
    )
    self.assertLen(tables.aggregate(tables.load_results([tmp / "a", tmp / "c"])), 2)

  def test_one_seed_has_no_std_and_latex_states_seeds(self):
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="al_report_test"))
    _write_results(
      tmp,
      {
        "uniform": np.array([[0.5, 0.6, 0.7], [0.5, 0.6, 0.8]]),
        "bilevel": np.array([[0.5, 0.6, 0.9]]),
      },
    )
    table = tables.aggregate(tables.load_results([tmp]))
    md = tables.table1_markdown(table, 30, "fsdd")
    self.assertIn("| Bilevel | 90.00 ± -- | 1 |", md)
    self.assertIn("| Uniform | 75.00 ± 7.07 | 2 |", md)
    tex = tables.table1_latex(table, 30, "fsdd")
    self.assertIn(r"Bilevel & 90.00 $\pm$ -- & 1 \\", tex)
    self.assertIn(r"(n=1)", tables.rounds_latex(table))

  def test_partial_results_make_a_report(self):
    """Strategies with different numbers of seeds and rounds (a comparison still running)."""
    src = pathlib.Path(tempfile.mkdtemp(prefix="al_report_test"))
    rng = np.random.default_rng(4)
    uni = rng.uniform(0.3, 0.9, (3, 3))
    bil = rng.uniform(0.3, 0.9, (2, 3))
    uni[2, 1:] = np.nan  # seed 2 of uniform stopped after the first round
    bil[1, 2] = np.nan
    _write_results(src, {"uniform": uni, "bilevel": bil})
    out = pathlib.Path(tempfile.mkdtemp(prefix="al_report_test"))
    rep = reports.write_report([src], out, with_figure2=False)
    self.assertIn("| Uniform |", rep["table_markdown"])
    self.assertGreater((out / "figure3.png").stat().st_size, 0)


class PairedTest(absltest.TestCase):
  def test_sign_test_matches_scipy(self):
    from scipy import stats  # pylint: disable=g-import-not-at-top

    for wins, losses in [(0, 6), (6, 0), (13, 17), (24, 5), (3, 3), (1, 0)]:
      self.assertAlmostEqual(
        tables.sign_test_p(wins, losses),
        stats.binomtest(wins, wins + losses, 0.5).pvalue,
        places=12,
      )
    self.assertEqual(tables.sign_test_p(0, 0), 1.0)

  def test_paired_differences_against_numpy(self):
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="al_report_test"))
    rng = np.random.default_rng(1)
    uni = rng.uniform(0.3, 0.9, (4, 3))
    bil = rng.uniform(0.3, 0.9, (4, 3))
    bil[1, 1] = uni[1, 1]  # a tie
    bil[3, 2] = np.nan  # seed 3 has not finished: paired over 3 seeds at 30
    _write_results(tmp, {"uniform": uni, "bilevel": bil})
    records = tables.load_results([tmp])
    pairs = tables.paired(records, "bilevel")
    self.assertEqual(list(pairs), ["uniform"])
    self.assertNotIn(10, pairs["uniform"])  # the shared first round is left out
    for r, n_lab in ((1, 20), (2, 30)):
      seeds = 4 if r == 1 else 3
      d = 100 * (bil[:seeds, r] - uni[:seeds, r])
      cell = pairs["uniform"][n_lab]
      self.assertAlmostEqual(cell.mean_diff, d.mean(), places=9)
      self.assertEqual(
        (cell.wins, cell.losses, cell.ties),
        (int((d > 0).sum()), int((d < 0).sum()), int((d == 0).sum())),
      )
    pooled = np.concatenate([100 * (bil[:4, 1] - uni[:4, 1]), 100 * (bil[:3, 2] - uni[:3, 2])])
    self.assertAlmostEqual(pairs["uniform"]["after_first"].mean_diff, pooled.mean(), places=9)
    md = tables.paired_markdown(pairs, "bilevel")
    self.assertIn("| Bilevel vs | 20 | 30 |", md)
    self.assertIn("-1)", md)  # the tie is shown
    self.assertEqual(tables.paired(records, "kcenter"), {})
    out = reports.write_report([tmp], tmp / "report", with_figure2=False)
    self.assertTrue((tmp / "report" / "paired.md").exists())
    self.assertIn("uniform", io.read_json(tmp / "report" / "table1.json")["paired"]["vs"])
    self.assertEqual(out["paired_markdown"], md)


class FiguresTest(absltest.TestCase):
  def test_write_report_with_figure2(self):
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="al_report_test"))
    rng = np.random.default_rng(1)
    _write_results(
      tmp, {"uniform": rng.uniform(0.5, 0.9, (2, 3)), "bilevel": rng.uniform(0.5, 0.9, (2, 3))}
    )
    n, c = 60, 10
    labels = np.arange(n) % c
    probs = np.full((n, c), 0.01)
    probs[np.arange(n), labels] = 0.91  # correct everywhere ...
    probs[[11, 12], :] = 0.01
    probs[[11, 12], 0] = 0.91  # ... except points 11 and 12 (predicted 0)
    picks = np.array([11, 12, 13, 23, 33])  # labels 1, 2, 3, 3, 3 -> 3 classes
    np.savez(
      results.figure2_path(tmp, "fsdd", "bilevel", 0),
      embeddings=rng.normal(size=(n, 4)).astype(np.float32),
      probs=probs,
      labels=labels,
      labeled_idx=np.arange(10),
      picks=picks,
      test_accuracy=0.55,
    )
    out = reports.write_report([tmp], tmp / "report", command="cmd")
    counts = out["figure2_counts"]
    self.assertEqual(counts["classes_covered"], 3)
    self.assertEqual(counts["misclassified"], 2)
    self.assertEqual(counts["pick_predictions"], [0, 0, 3, 3, 3])
    for name in (
      "table1.md",
      "table1.tex",
      "table_rounds.tex",
      "table1.json",
      "figure3.png",
      "figure2.png",
      "figure2_counts.json",
    ):
      self.assertTrue((tmp / "report" / name).stat().st_size > 0, name)
    summary = io.read_json(tmp / "report" / "table1.json")
    self.assertEqual(summary["final_budget"], 30)
    self.assertEqual(summary["command"], "cmd")
    # Without the (uncommitted) round-0 file, Figure 2 is redrawn from the committed points.
    points = io.read_json(tmp / "report" / "figure2_points.json")
    self.assertEqual(np.shape(points["xy"]), (n, 2))
    results.figure2_path(tmp, "fsdd", "bilevel", 0).unlink()
    (tmp / "report" / "figure2.png").unlink()
    again = reports.write_report([tmp], tmp / "report", command="cmd2")
    self.assertEqual(again["figure2_counts"]["pick_predictions"], [0, 0, 3, 3, 3])
    self.assertEqual(again["figure2_counts"]["command"], "cmd2")
    self.assertGreater((tmp / "report" / "figure2.png").stat().st_size, 0)
    # Another seed's points never stand in for the requested seed (its round-0 file is absent).
    other = reports.write_report([tmp], tmp / "report", figure2_seed=1)
    self.assertNotIn("figure2", other)
    # A fresh output folder finds the committed points in report/ next to the results.
    fresh = reports.write_report([tmp], tmp / "elsewhere")
    self.assertEqual(fresh["figure2_counts"]["pick_predictions"], [0, 0, 3, 3, 3])
    self.assertTrue((tmp / "elsewhere" / "figure2_points.json").exists())

  def test_first_round_counts(self):
    npz = dict(
      probs=np.eye(3)[[0, 1, 2, 0]],
      labels=np.array([0, 1, 1, 2]),
      picks=np.array([2, 3]),
      labeled_idx=np.array([0]),
      test_accuracy=0.5,
    )
    counts = figures.first_round_counts(npz)
    self.assertEqual((counts["classes_covered"], counts["misclassified"]), (2, 2))
    self.assertAlmostEqual(counts["initial_model_pool_accuracy"], 0.5)


if __name__ == "__main__":
  absltest.main()


def _round0(tmp: pathlib.Path, seed: int = 2) -> pathlib.Path:
  rng = np.random.default_rng(seed)
  n, c = 40, 10
  labels = np.arange(n) % c
  path = results.figure2_path(tmp, "fsdd", "bilevel", 0)
  np.savez(
    path,
    embeddings=rng.normal(size=(n, 4)).astype(np.float32),
    probs=np.eye(c)[labels] * 0.9 + 0.01,
    labels=labels,
    labeled_idx=np.arange(10),
    picks=np.array([10, 21, 32]),
    test_accuracy=0.4,
  )
  return path


class _FirstTwoColumns:
  """Stands in for sklearn's TSNE (seconds per call on a busy 2-core machine)."""

  def __init__(self, **kwargs):
    del kwargs

  def fit_transform(self, x):
    return np.asarray(x)[:, :2]


class ReportReuseAndHonestyTest(absltest.TestCase):
  def setUp(self):
    super().setUp()
    import sklearn.manifold  # pylint: disable=import-outside-toplevel

    self.enter_context(absltest.mock.patch.object(sklearn.manifold, "TSNE", _FirstTwoColumns))

  def test_tsne_points_are_reused_while_the_round0_file_is_unchanged(self):
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="al_report_test"))
    _write_results(tmp, {"bilevel": np.array([[0.5, 0.6, 0.7]])})
    npz = _round0(tmp)
    calls = []
    real = figures.figure2_points

    def counting(path, **kw):
      calls.append(path)
      return real(path, **kw)

    figures.figure2_points = counting
    try:
      first = reports.write_report([tmp], tmp / "report")
      stored = io.read_json(tmp / "report" / "figure2_points.json")
      self.assertEqual(stored["inputs_sha256"], figures.figure2_inputs_sha256(npz))
      again = reports.write_report([tmp], tmp / "report")
      self.assertLen(calls, 1)  # the second report reused the points
      self.assertEqual(again["figure2_counts"], first["figure2_counts"])
      _round0(tmp, seed=3)  # a new round-0 file (another run): the t-SNE is redone
      reports.write_report([tmp], tmp / "report")
      self.assertLen(calls, 2)
    finally:
      figures.figure2_points = real

  def test_figure3_says_n1_honestly_and_ticks_at_the_label_counts(self):
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="al_report_test"))
    _write_results(
      tmp,
      {"bilevel": np.array([[0.5, 0.6, 0.7]]), "uniform": np.array([[0.4, 0.5, 0.6]])},
      schedule=(10, 15, 30),
    )
    table = tables.aggregate(tables.load_results([tmp]))
    self.assertIn("one seed (n=1)", figures.spread_description(table))
    self.assertNotIn("std", figures.spread_description(table))
    captured = {}
    real_savefig = figures.plt.Figure.savefig

    def grab(fig, *args, **kwargs):
      ax = fig.axes[0]
      captured["ticks"] = [float(t) for t in ax.get_xticks()]
      captured["title"] = ax.get_title()
      return real_savefig(fig, *args, **kwargs)

    figures.plt.Figure.savefig = grab
    try:
      reports.write_report([tmp], tmp / "report", with_figure2=False)
    finally:
      figures.plt.Figure.savefig = real_savefig
    self.assertEqual(captured["ticks"], [10.0, 15.0, 30.0])
    self.assertIn("one seed (n=1)", captured["title"])
    self.assertNotIn("mean ± 1 std", captured["title"])
    two = tables.aggregate(tables.load_results([tmp])) | {
      "x": {10: tables.Cell(50.0, 1.0, 2, (49.0, 51.0))}
    }
    self.assertIn("± 1 sample std", figures.spread_description(two))
    self.assertEqual(figures.label_ticks(list(range(10, 61, 2))), list(range(10, 61, 6)))

  def test_figure2_has_a_class_legend_and_a_caption(self):
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="al_report_test"))
    points = figures.figure2_points(_round0(tmp))
    captured = {}
    real_savefig = figures.plt.Figure.savefig

    def grab(fig, *args, **kwargs):
      ax = fig.axes[0]
      captured["legends"] = [
        [t.get_text() for t in leg.get_texts()]
        for leg in ax.findobj(figures.matplotlib.legend.Legend)
      ]
      captured["texts"] = [t.get_text() for t in fig.texts]
      return real_savefig(fig, *args, **kwargs)

    figures.plt.Figure.savefig = grab
    try:
      figures.plot_figure2(points, tmp / "figure2.png")
    finally:
      figures.plt.Figure.savefig = real_savefig
    self.assertIn([str(k) for k in range(10)], captured["legends"])
    self.assertIn(["initial labeled pool", "first-round picks"], captured["legends"])
    caption = " ".join(captured["texts"]).replace("\n", " ")
    self.assertIn("t-SNE of the round-0 model's last-layer embeddings of all 40", caption)
    self.assertIn("red stars: the 3 clips picked in the first round", caption)
