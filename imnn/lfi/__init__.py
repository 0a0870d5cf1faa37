"""Likelihood-free inference with a fitted compressor (e.g. an IMNN's parameter estimate).

Everything here sees a fitted IMNN only through ``compressor(d (n,) + input_shape) -> (n, p)``
and ``simulator(key, θ (p,)) -> d`` (both JAX-traceable)::

    prior = Uniform(low=[-2., 0.2], high=[2., 3.])
    ga = GaussianApproximation(compressor(target_data), invF, prior)
    abc = ApproximateBayesianComputation(target_data, prior, simulator, compressor, F=F)
    abc(ϵ=0.5, rng=key, n_samples=100_000, min_accepted=1000)
    pmc = PopulationMonteCarlo(target_data, prior, simulator, compressor, F=F)
    pmc(key, n_points=1000, n_initial_points=5000, criterion=0.05)
    figure, axes = ga.marginal_plot(known=θ_true)
    pmc.marginal_plot(axes=axes)

Priors:     Prior (the contract), Uniform (a box), as_prior (checks; adapts numpyro and TFP-on-JAX).
Posteriors: GaussianApproximation, ApproximateBayesianComputation, PopulationMonteCarlo.
Results:    Marginals (grid, one_d, two_d), Samples, Round, histogram_marginals.
Plots:      plot_marginals (corner), plot_scatter.
Refitting:  fit_and_refit (fit at θ_fid, estimate the target, refit there, repeat).
"""
from imnn.lfi._abc import ApproximateBayesianComputation, Samples
from imnn.lfi._gaussian import GaussianApproximation
from imnn.lfi._marginals import Marginals, histogram_marginals
from imnn.lfi._plot import plot_marginals, plot_scatter
from imnn.lfi._pmc import PopulationMonteCarlo, Round
from imnn.lfi._priors import Prior, Uniform, as_prior
from imnn.lfi._refit import RefitRound, fit_and_refit

__all__ = [
    "Prior", "Uniform", "as_prior", "GaussianApproximation", "ApproximateBayesianComputation",
    "PopulationMonteCarlo", "Marginals", "Samples", "Round", "histogram_marginals",
    "plot_marginals", "plot_scatter", "fit_and_refit", "RefitRound",
]
