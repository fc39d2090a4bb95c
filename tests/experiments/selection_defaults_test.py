"""The selection conventions each config mode sets (issue 14's decision on the default solver)."""

import pytest

from experiments.configs import fsdd
from experiments.configs import speech_commands


@pytest.mark.parametrize("get_config", [fsdd.get_config, speech_commands.get_config])
def test_paper_mode_is_the_faithful_exact_selection(get_config):
  b = get_config("paper").bilevel
  assert (b.solver, b.loss_reduction) == ("exact", "sum")
  assert (b.ntk_activation, b.ntk_leaky_slope, b.ntk_final_activation) == ("leaky_relu", 0.1, True)
  c = get_config("paper")
  assert c.bilevel_embed.solver == "exact" and c.bilevel_tempered.solver == "exact"
  assert c.bilevel_ssl.solver == "paper"  # its greedy loop has only the paper solver


@pytest.mark.parametrize("mode", ["tiny", "quick", "cpu"])
def test_modes_with_committed_results_keep_their_conventions(mode):
  b = fsdd.get_config(mode).bilevel
  assert (b.solver, b.loss_reduction, b.ntk_activation, b.ntk_final_activation) == (
    "paper",
    "mean",
    "relu",
    False,
  )
