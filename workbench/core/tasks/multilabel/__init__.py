"""Multi-label classification: several labels per example, sigmoid outputs, one threshold per label.

Shared by the text and image variants, none of them reading the inputs: ``labels`` (label lists,
separators, 0/1 cells, multi-hot), ``data`` (label sets read from a table, their validation
findings), ``thresholds`` (per-label tuning on validation), ``scoring`` (metrics and report) and
``outputs`` (the mixin with the loss, decisions, evaluation and export facts). ``text`` is the text
task (text-multilabel)."""
