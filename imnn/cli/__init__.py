"""The ``imnn`` command line.

    imnn demo                    fit the mean/variance toy problem (no files needed)
    imnn fit CONFIG.toml         fit what a TOML file describes, into a run directory
    imnn fit --resume RUN        carry on an interrupted fit exactly where it stopped
    imnn estimate RUN DATA.npy   score-compressed estimates θ̂, one per simulation
    imnn info RUN                the run's IMNN, statistics and history
    imnn lfi RUN TARGET.npy      Gaussian-approximation posterior mean and std

The package has one module per concern: ``_schema`` (every config key's kind,
default and meaning), ``_config`` and ``_optimiser`` (reading and checking a
config), ``_toml`` (writing it back), ``_job`` (building the model, optimiser,
simulator or data and the IMNN), ``_rundir`` (checkpoints and the run
directory's lock), ``_signals``, ``_run`` (a fit into a run directory), one
module per command, and ``_commands`` (the table of commands, the parser and
``main``). The documentation's command-line page is the config reference.
"""
from __future__ import annotations

from ._commands import COMMANDS, main, parser
from ._config import read_config, resolve_config
from ._errors import EXIT_ERROR, EXIT_USAGE, CommandError
from ._rundir import CHECKPOINT, PREVIOUS, Checkpoints
from ._toml import to_toml

__all__ = ["main", "parser", "COMMANDS", "read_config", "resolve_config", "to_toml",
           "CommandError", "EXIT_ERROR", "EXIT_USAGE", "CHECKPOINT", "PREVIOUS", "Checkpoints"]
