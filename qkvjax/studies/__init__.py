"""One module per study: ``--exp=NAME`` runs ``qkvjax.studies.NAME`` (or,
for a command that is not a study, ``qkvjax.commands.NAME``).

Each module defines ``check(config, results_dir)``, which raises
``ConfigError`` for bad input before anything is written, and
``run(config, results_dir, progress=True) -> run_dir``.
"""
