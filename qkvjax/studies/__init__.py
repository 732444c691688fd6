"""One module per experiment: ``--exp=NAME`` runs ``qkvjax.studies.NAME``.

Each module defines ``check(config, results_dir)``, which raises
``ConfigError`` for bad input before anything is written, and
``run(config, results_dir, progress=True) -> run_dir``.
"""
