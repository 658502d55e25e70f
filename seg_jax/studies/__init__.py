"""Studies: configs × seeds run from one command, and the paper table made from their results.

    spec       study files (`get_study`): base config, arms (overrides), seeds, metrics, baseline; validation
    runner     every arm × seed as an ordinary run in WORKDIR/<arm>/seed<k>/, resumable, parallel, or as commands
    load       study.json and each run's results.json / config.json / metrics.jsonl
    stats      mean, std (ddof 1), Student-t 95 % CI, paired differences and t-test
    aggregate  results.csv / results.md / results.tex and plots/ of a study directory
    report     `python -m seg_jax.studies.report runs/studies --out docs/results.md`: every study in one document
"""
