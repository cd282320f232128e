"""The local stack's pure parts: the pipeline command, the refusal without a pipeline, the JSON log lines."""
from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from services import stack
from services.config import Settings


def test_the_pipeline_is_started_with_the_stacks_names():
    settings = Settings.from_env({"GOOGLE_CLOUD_PROJECT": "proj-1", "DCAS_MAX_ATTEMPTS": "4"})
    assert stack.streaming_pipeline_command(settings) == [
        sys.executable, "-m", "pipelines.streaming", "--project=proj-1",
        "--subscription=projects/proj-1/subscriptions/dcas-jobs-pipeline",
        "--jobs_topic=projects/proj-1/topics/dcas-jobs",
        "--dead_letter_topic=projects/proj-1/topics/dcas-dead-letters",
        "--status_collection=jobs", "--max_attempts=4"]


def test_without_the_pipeline_module_the_stack_says_so_before_starting_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("DCAS_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr(stack, "PIPELINE_MODULE", "pipelines.no_such_pipeline")
    with pytest.raises(stack.StackError, match="pipelines.no_such_pipeline.*--no-pipeline"):
        stack.run_up(io.StringIO(), io.StringIO())
    assert list(tmp_path.iterdir()) == []


def test_log_lines_are_json_with_the_job_id_and_the_events_fields():
    formatter = stack.JsonFormatter()
    record = logging.LogRecord("dcas.reconciler", logging.INFO, __file__, 1, "job %s requeued", ("j-1",), None)
    record.job_id = "j-1"
    line = json.loads(formatter.format(record))
    assert (line["message"], line["job_id"], line["level"]) == ("job j-1 requeued", "j-1", "INFO")
    event = logging.LogRecord("dcas.stack", logging.WARNING, __file__, 1,
                              json.dumps({"event": "pipeline-exited", "status": 1}), (), None)
    assert json.loads(formatter.format(event))["event"] == "pipeline-exited"
