"""Representer-theorem formulation of the bilevel selection (Borsos et al. 2020), for comparison."""
