"""Optuna search over attention and fusion settings (``bigfive tune``; docs/tuning.md).

- :mod:`~bigfive.tuning.space`: ``tune.space`` -> suggestions (conditional params) -> trial params
- :mod:`~bigfive.tuning.study`: storages (sqlite/PostgreSQL/MySQL, journal file), sampler, pruner, resume
- :mod:`~bigfive.tuning.objective`: one trial = one nested MLflow run of ``bigfive.training.fit``
- :mod:`~bigfive.tuning.report`: trials.csv, best_params.yaml, figures
- :mod:`~bigfive.tuning.apply`: merge best_params.yaml into params.yaml
- :mod:`~bigfive.tuning.tune`: the CLI
"""
