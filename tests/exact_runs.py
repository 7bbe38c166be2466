"""Runs the exactness tests compare: one straight (undisturbed) run per config and engine, and
a job's final weights."""

from conftest import wait_for_status
from safetensors.torch import load_file

from engine.console.people.users import LOCAL_USER

# 85 rows in batches of 4: 22 micro-batches, 6 optimizer steps per epoch with accumulation 4.
# Micro-batch 10 is the 2nd of step 3's 4: mid-cycle and mid-epoch. Dropout makes RNG matter.
EXACT = {"max_steps": 10, "gradient_accumulation_steps": 4, "per_device_train_batch_size": 4,
         "lora_dropout": 0.1, "learning_rate": 5e-3, "warmup_steps": 0, "save_steps": 1000}
# The same, evaluated every 2 steps (before a pause at step 3 and after it). 85 rows less a tenth
# held out: 77, in 20 micro-batches, 5 optimizer steps an epoch; micro-batch 10 still mid-step 3.
EVALUATED = {**EXACT, "eval_split": 0.1, "eval_steps": 2}


def final_tensors(engine, job_id):
    folder = engine.workspace.job_paths(job_id).final_model
    name = "adapter_model.safetensors" if (folder / "adapter_model.safetensors").exists() \
        else "model.safetensors"
    return load_file(folder / name)


# (workspace, config) -> job id: one straight run serves every comparison on that engine
STRAIGHT_RUNS: dict[tuple[str, str], str] = {}


def straight_run(engine, config):
    key = (str(engine.workspace.root), repr(sorted(config.items())))
    if key not in STRAIGHT_RUNS:
        STRAIGHT_RUNS[key] = engine.jobs.submit(LOCAL_USER,
                                                {**config, "name": "straight"})["job_id"]
        wait_for_status(engine, STRAIGHT_RUNS[key])
    return STRAIGHT_RUNS[key]
