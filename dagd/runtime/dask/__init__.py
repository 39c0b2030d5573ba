"""Steps on a Dask distributed cluster (`executor = "dask"`; docs/dask.md).

- executor.py: the daemon's side, `DaskExecutor` (one client, submissions, completions).
- connection.py: the client to the scheduler, kept up in the background.
- logsink.py: output streamed back from workers, written into the daemon's log files.
- worker.py: what runs on the workers (a step's attempt, the table of running attempts,
  stopping them).
- plugin.py: the worker plugin that kills what a dead worker's steps left running.

Only this package imports `distributed`: dagd without the `dask` extra never loads it.
"""
