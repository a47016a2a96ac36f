"""dsnn_job: the main job end to end (synthesize or read speech -> prepare -> train -> evaluate ->
export -> transcribe -> benchmark -> summary), each step's output directory a fingerprinted artifact.

Example:
    >>> from dsnn_job import JobConfig, run_job
    >>> result = run_job(JobConfig(out=pathlib.Path("demo")))   # what `make demo` runs
"""
from dsnn_job.artifacts import StepError, StepRecord, StepSpec, fingerprint_tree, read_record, run_step
from dsnn_job.job import STEPS, Job, JobConfig, run_job
from dsnn_job.summary import build_summary, write_summary

__all__ = ["STEPS", "Job", "JobConfig", "StepError", "StepRecord", "StepSpec", "build_summary",
           "fingerprint_tree", "read_record", "run_job", "run_step", "write_summary"]
