"""Views of a finished run's evaluation, one per kind of task; the Evaluate page picks one."""
