"""The environment a local step runs with: dagd's own, the DAG's and the step's `env`, then the
DAGD_* variables that say which attempt this is and carry the run's params.

`$NAME`, `${NAME}` and `$$` in `env` values expand here, when the attempt starts (so from the
daemon's environment as it is then), entry by entry in `step.env_order`: the DAG's entries,
then the step's, each seeing dagd's environment and the entries before it. Params travel only
as environment variables (added after expansion, so no value expands into them and they never
expand into a value), never pasted into the shell text: a param value is data, whatever
characters it holds; so are the outputs of upstream steps. DAGD_RUN_ID is also how recovery
finds a step's processes when their process group was never recorded (procs.py).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping

from dagd.core.model import StepSpec, param_variable
from dagd.core.outcome import outcome_env
from dagd.core.outputs import OUTPUT_FILE_VAR, output_environment
from dagd.core.text import expand_env
from dagd.runtime.executor import StepContext

#: The variable every local step's processes carry, and recovery searches for.
RUN_ID_VAR = "DAGD_RUN_ID"

#: dagd's own secrets that are never passed on to a step, whatever the config says: the
#: client token the `dagd` commands read. Config.secret_env_names adds the variables that
#: hold the daemon's accepted tokens.
ALWAYS_HIDDEN = ("DAGD_TOKEN",)


def step_environment(
    step: StepSpec,
    ctx: StepContext,
    base: Mapping[str, str] | None = None,
    hidden: Collection[str] = ALWAYS_HIDDEN,
    output_file: str | None = None,
) -> dict[str, str]:
    """The environment of one attempt of a shell step: `base` (default: this process's
    environment) less the variables named in `hidden` (dagd's own secrets, such as the
    variable an auth token is read from), updated with `step.env` (the DAG's `env` merged
    with the step's), each value `$`-expanded against what is set before it (hidden ones are
    gone by then; `step.env_order`: the DAG's entries, then the step's), then DAGD_DAG_ID,
    DAGD_RUN_ID, DAGD_STEP_ID, DAGD_ATTEMPT and DAGD_PARAM_<NAME> for each param (names
    upper-cased), and for a lifecycle handler its run's outcome (DAGD_RUN_STATUS,
    DAGD_FAILED_STEPS, DAGD_FAILED_COUNT, DAGD_RUN_OUTCOME: dagd/core/outcome.py), which a
    step's `env` cannot override; then DAGD_OUTPUT_<STEP>_<KEY> for each
    output of the steps upstream (`ctx.outputs`, dagd/core/outputs.py), and DAGD_OUTPUT, the
    file the step writes its own outputs to: `output_file` (None: the variable is unset, for
    a precondition or wait_for command). Raises OutputError when two upstream outputs would
    be one variable."""
    env = dict(os.environ if base is None else base)
    for name in hidden:
        env.pop(name, None)
    for name, value in step.env_order or step.env.items():
        env[name] = expand_env(value, env)
    env["DAGD_DAG_ID"] = ctx.dag_id
    env[RUN_ID_VAR] = ctx.run_id
    env["DAGD_STEP_ID"] = ctx.step_id
    env["DAGD_ATTEMPT"] = str(ctx.attempt)
    for name, value in ctx.params.items():
        env[param_variable(name)] = value
    if ctx.outcome is not None:  # a lifecycle handler: how its run ended
        env.update(outcome_env(ctx.outcome))
    if ctx.outputs:
        env.update(output_environment(ctx.outputs))
    if output_file is None:
        env.pop(OUTPUT_FILE_VAR, None)
    else:
        env[OUTPUT_FILE_VAR] = output_file
    return env
