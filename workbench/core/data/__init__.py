"""Reading, checking and splitting user data files. Qt-free, like all of ``workbench.core``."""

from ..labels import LabelMap, build_label_map
from .columns import ColumnChoice, build_labeled, choose_columns
from .split import stratified_split
from .tabular import RowProblem, Table, TableFormat, read_table
from .validation import Finding, ValidationReport, validate_classification

__all__ = [
    "ColumnChoice",
    "Finding",
    "LabelMap",
    "RowProblem",
    "Table",
    "TableFormat",
    "ValidationReport",
    "build_label_map",
    "build_labeled",
    "choose_columns",
    "read_table",
    "stratified_split",
    "validate_classification",
]
