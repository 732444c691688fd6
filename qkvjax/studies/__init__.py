"""One module per study: ``--exp=NAME`` runs ``qkvjax.studies.NAME`` (or,
for a command that is not a study, ``qkvjax.commands.NAME``).

Each module declares ``STUDY`` (a ``qkvjax.study.Study``: its task,
conditions, metrics, claims, figures and report sections); the framework
checks, runs and finishes it. A module that is not a declared study defines
``check(config, results_dir)``, which raises ``ConfigError`` for bad input
before anything is written, and ``run(config, results_dir, progress=True)
-> run_dir``.
"""
