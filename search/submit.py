"""``hpsearch submit``: a sweep sent to a running Ray cluster as a Ray Job."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hpsearch.search.spec import SweepSpec
from hpsearch.trainables.errors import UserError

__all__ = ["submit_sweep"]


def submit_sweep(spec_text: str, spec: SweepSpec, address: str, *, follow: bool = False,
                 echo: Callable[[str], None] = print) -> str:
    """Send a sweep to a running Ray cluster as a Ray Job (``hpsearch sweep --address auto``
    on the head node); returns the job id. Token auth: ``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN``."""
    from ray.job_submission import JobSubmissionClient

    from hpsearch.search.driver import JOB_METADATA_KEY

    deadline = time.monotonic() + 60
    submission_id = f"hpsearch-{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    while True:
        try:
            client = JobSubmissionClient(address)
            job_id = client.submit_job(
                # The spec travels as an env var: no working_dir package to upload or to be
                # garbage-collected under the running driver.
                entrypoint="hpsearch sweep env:HPSEARCH_SPEC_YAML --address auto",
                runtime_env=_job_env(spec, spec_text, submission_id, address),
                submission_id=submission_id,
                metadata={JOB_METADATA_KEY: spec.name})
            break
        except Exception as err:  # noqa: BLE001 - connection refused, auth, bad URL: one line
            text = str(err).strip()
            if "try again later" in text and time.monotonic() < deadline:
                time.sleep(3)  # the head's job agent is still starting
                continue
            from hpsearch.search.operate import job_api_error

            raise UserError(job_api_error(address, err)) from None
    echo(f"submitted sweep '{spec.name}' as Ray job {job_id} to {address}")
    echo(f"  follow:  ray job logs {job_id} --address {address} --follow")
    echo(f"  status:  hpsearch status {spec.name}  (or: ray job status {job_id} "
         f"--address {address})")
    echo(f"  dashboard: {address}")
    if follow:
        import asyncio

        async def tail() -> None:
            async for chunk in client.tail_job_logs(job_id):
                echo(chunk.rstrip("\n"))

        asyncio.run(tail())
        status = client.get_job_status(job_id)
        echo(f"job {job_id}: {status}")
        if str(status) != "SUCCEEDED":
            raise SystemExit(1)
    return job_id


def _job_env(spec: SweepSpec, spec_text: str, submission_id: str,
             address: str) -> dict[str, Any]:
    """The job's runtime environment: the spec, how `hpsearch stop` reaches the job, and the
    plugins from the user's folders (Ray uploads them, so nothing has to be installed on the
    cluster)."""
    from hpsearch.search.driver import job_env
    from hpsearch.trainables.plugins import shipped_modules

    env: dict[str, Any] = {"env_vars": {"HPSEARCH_SPEC_YAML": spec_text,
                                        **job_env(submission_id, address)}}
    shipped = shipped_modules(spec.plugins)
    if shipped:
        env["py_modules"] = shipped
    return env
