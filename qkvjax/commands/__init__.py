"""Commands run by ``--exp=NAME`` that are not studies: they train nothing
of their own. ``claims`` runs every claim study and tabulates them;
``figures`` redraws a saved run. Like a study module without ``STUDY``, each
defines ``check(config, results_dir)`` and ``run(config, results_dir,
progress=True) -> run_dir``; ``registry.experiment_module`` finds them.
"""
