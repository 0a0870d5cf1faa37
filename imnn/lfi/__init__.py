"""Likelihood-free inference with a fitted compressor (e.g. an IMNN's parameter estimate).

Everything here sees a fitted IMNN only through ``compressor(d (n,) + input_shape) -> (n, p)``.

Priors:        Prior (the contract), Uniform (box), as_prior (checks; adapts TFP-on-JAX).
Posteriors:    GaussianApproximation, ApproximateBayesianComputation, PopulationMonteCarlo.
Results:       Marginals (grid, one_d, two_d), Samples, Round, histogram_marginals.
Plots:         plot_marginals (corner), plot_scatter.
"""
from imnn.lfi._abc import ApproximateBayesianComputation, Samples
from imnn.lfi._gaussian import GaussianApproximation
from imnn.lfi._marginals import Marginals, histogram_marginals
from imnn.lfi._plot import plot_marginals, plot_scatter
from imnn.lfi._pmc import PopulationMonteCarlo, Round
from imnn.lfi._priors import Prior, Uniform, as_prior

__all__ = [
    "Prior", "Uniform", "as_prior", "GaussianApproximation", "ApproximateBayesianComputation",
    "PopulationMonteCarlo", "Marginals", "Samples", "Round", "histogram_marginals",
    "plot_marginals", "plot_scatter",
]
