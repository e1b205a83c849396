"""One run and its directory: the pipeline every front end calls (pipeline.py) and its named stages
(stages.py), the run directory contract (directory.py), reading runs back (history.py), the refit on
every row (refit.py) and the estimate before Start (preflight.py)."""
