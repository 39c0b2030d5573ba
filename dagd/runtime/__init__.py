"""Running attempts of steps: the engine that drives one run (engine.py), the executor seam
(executor.py), the step-log layout (logfiles.py), and the local executor (local/). Imports only
dagd.core."""
