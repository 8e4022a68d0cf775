"""batch-engage: engage customer profiles in a marketing scenario in bulk.

Library use (Airflow, Prefect, notebooks)::

    from batch_engage import RunOptions, run
    summary = run(RunOptions(input=Path("customers.csv"), workflow_id=12, dry_run=True))

    # The rows of a pandas DataFrame (the pandas extra); ``input`` only names them:
    summary = run(RunOptions(input=Path("crm-export"), workflow_id=12, dry_run=True), frame=df)
"""

__version__ = "0.1.0"  # pyproject.toml reads it from here

from .errors import BatchEngageError, InputFileError, UsageError
from .job import RunControl, run, run_async
from .mapper import Mapper, Request, RowError
from .options import Matching, RunOptions, Secret, load_config
from .progress import ProgressEvent
from .reader import Record, open_table
from .reporter import Summary
from .status import ExitStatus

__all__ = [
    "BatchEngageError",
    "ExitStatus",
    "InputFileError",
    "Mapper",
    "Matching",
    "ProgressEvent",
    "Record",
    "Request",
    "RowError",
    "RunControl",
    "RunOptions",
    "Secret",
    "Summary",
    "UsageError",
    "__version__",
    "load_config",
    "open_table",
    "run",
    "run_async",
]
