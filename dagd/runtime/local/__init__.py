"""The local executor: steps run on this machine. executor.py (LocalExecutor, the seam's
implementation), shell.py and shellthread.py (a shell attempt: the event loop's side and the
worker thread's), python.py (callables), environment.py (a step's environment), procs.py
(processes through psutil), leftovers.py (the leftover handle and the clean-up after a crash)."""
