"""`python -m services.caption [celery worker options]`: a caption worker on queues `similar`
(query photos' vectors: a user waits), `caption`, then `ocr` (text in photos, taken only while
neither of the others waits; not with CAPSEARCH_OCR=0), in that order of priority.
A worker for OCR alone: `python -m services.caption --queues ocr`.

Defaults to the solo pool (one task at a time in this process: its CNN passes already run on
every core, one single-threaded stream each, `CAPSEARCH_CPU_STREAMS`); extra arguments go to
`celery worker`, e.g. `--pool prefork --concurrency 2` with `CAPSEARCH_CPU_STREAMS=1`.
"""

from __future__ import annotations

import sys

from services.caption.worker import WorkerContext, create_celery_app
from shared.celery_app import OCR_QUEUE, WORKER_QUEUES
from shared.config import Settings, get_settings
from shared.db.migrate import require_current_at_start
from shared.devices import set_torch_threads
from shared.logging import configure_logging
from shared.metrics import start_metrics_server
from shared.scheduling import lower_process_priority


def worker_queues(settings: Settings) -> str:
    """The queues a worker takes from, in the order the transport polls them ("priority",
    shared/celery_app.py): query photos first (their request waits for the answer), then
    captions, then OCR; a task waits for the one in progress, never behind a later queue's
    backlog."""
    return ",".join(q for q in WORKER_QUEUES if settings.ocr or q != OCR_QUEUE)


def main(argv: list[str] | None = None) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, json_logs=settings.log_json)
    # before any thread starts: they all inherit it (queries first on a shared host)
    lower_process_priority(settings.worker_nice)
    require_current_at_start(settings.sqlalchemy_url, "caption worker")
    set_torch_threads(settings.torch_threads)
    # stage latency and images by outcome (the solo pool: this process runs the tasks)
    start_metrics_server(settings.worker_metrics_port, settings.host)
    context = WorkerContext(settings)
    app = create_celery_app(settings, context)
    context.warm_up()  # the solo pool runs the tasks in this process: load its models now
    args = ["worker", "--queues", worker_queues(settings), "--pool", "solo",
            "--loglevel", settings.log_level, "--hostname", "caption@%h"]
    app.worker_main(args + list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
