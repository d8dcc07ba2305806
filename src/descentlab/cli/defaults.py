"""The API's defaults that the ``--help`` texts quote (and a few the parsers use as their defaults), copied
here because the modules that own them import torch, and building the parser must not: ``descentlab
--help`` and every ``descentlab COMMAND --help`` answer without torch. tests/test_cli_help.py pins each
value to its owner's, so changing a default there fails that test until it is changed here too."""

from __future__ import annotations

# descentlab.racing.protocol
RACE_OPTIMIZERS = ("gd", "sgd", "momentum", "adagrad", "rmsprop", "adam")
RACE_SEEDS = 3
RACE_EPOCHS = 60
QUICK_LRS = (1e-3, 1e-2, 1e-1)
QUICK_SEEDS = 2
QUICK_EPOCHS = 3

# descentlab.train.schedule, descentlab.train
SCHEDULES = ("constant", "cosine", "warmup-cosine")
WARMUP_FRACTION = 0.05
TRAIN_EPOCHS = 20
DIVERGENCE_FACTOR = 100.0

# descentlab.study.suite: the default suite (workload name -> epochs) and the budget of a workload of your own
SUITE_EPOCHS = {"mnist1d-mlp": 60, "mnist1d-cnn": 60, "digits-mlp": 120, "lstsq-linear": 60}
OWN_EPOCHS = 20

# descentlab.lrfind.ramp
LRFIND_START_LR = 1e-7
LRFIND_END_LR = 10.0
LRFIND_STEPS = 100
LRFIND_BETA = 0.98
LRFIND_STOP_FACTOR = 4.0
LRFIND_SUGGESTION_DIVISOR = 10.0

# descentlab.landscape, descentlab.tasks.surfaces
LANDSCAPE_OPTIMIZERS = ("gd", "momentum", "adagrad", "rmsprop", "adam")
LANDSCAPE_STEPS = 200
LANDSCAPE_TOL = 1e-2
SURFACES = ("saddle", "local-minima", "rosenbrock", "bowl", "rastrigin")

# descentlab.bench
BENCH_OPTIMIZERS = ("momentum", "adagrad", "rmsprop", "adam")
BENCH_ENGINES = ("auto", "fused-ieee")
