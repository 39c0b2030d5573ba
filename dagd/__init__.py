"""dagd: a single-host workflow daemon on trio."""
