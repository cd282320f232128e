"""The pipelines translate for the DataflowRunner offline: the job file is written, nothing is submitted.

`--template_location` makes the DataflowRunner stage the pipeline and write the job description to that
path instead of calling the Dataflow API; the staging bucket is the GCS emulator's and `--no_auth` keeps
credentials out. Translation pickles every DoFn and converts the graph to the portable proto Dataflow
Runner v2 executes, so an unpicklable DoFn or a transform Dataflow cannot run fails here, not in the cloud.
"""
from __future__ import annotations

import json
import uuid

import apache_beam as beam
import pytest
from apache_beam.portability.api import beam_runner_api_pb2
from google.cloud import storage

from pipelines import batch, streaming

IMAGE = "europe-west1-docker.pkg.dev/dcas-test/dcas/dcas:test"
# Leaf transforms Dataflow Runner v2 executes (the primitives and the composites it translates itself).
DATAFLOW_URNS = {
    "beam:transform:impulse:v1", "beam:transform:pardo:v1", "beam:transform:group_by_key:v1",
    "beam:transform:flatten:v1", "beam:transform:window_into:v1", "beam:transform:reshuffle:v1",
    "beam:transform:combine_per_key:v1", "beam:transform:combine_globally:v1",
    "beam:transform:combine_grouped_values:v1", "beam:transform:combine_per_key_precombine:v1",
    "beam:transform:combine_per_key_merge_accumulators:v1", "beam:transform:combine_per_key_extract_outputs:v1",
    "beam:transform:sdf_pair_with_restriction:v1", "beam:transform:sdf_split_and_size_restrictions:v1",
    "beam:transform:sdf_process_sized_element_and_restrictions:v1", "beam:transform:group_into_batches:v1",
    "beam:transform:pubsub_read:v1", "beam:transform:pubsub_write:v2",
}


def dataflow_args(bucket: str, name: str) -> list[str]:
    return ["--runner=DataflowRunner", "--project=dcas-test", "--region=europe-west1", "--no_auth",
            f"--temp_location=gs://{bucket}/{name}/tmp", f"--staging_location=gs://{bucket}/{name}/staging",
            f"--template_location=gs://{bucket}/{name}/job.json", "--sdk_location=container",
            f"--sdk_container_image={IMAGE}"]


def translate(bucket: str, name: str, pipeline_args: list[str], build) -> tuple[dict, beam_runner_api_pb2.Pipeline]:
    """Builds the graph with `build(pipeline)` and runs it on the DataflowRunner, which only writes files here."""
    with batch.new_pipeline(pipeline_args) as pipeline:
        build(pipeline)
        pipeline.run()
    client = storage.Client(project="dcas-test")
    job = json.loads(client.bucket(bucket).blob(f"{name}/job.json").download_as_bytes())
    (staged,) = [blob for blob in client.list_blobs(bucket, prefix=f"{name}/staging/")
                 if blob.name.endswith("/pipeline.pb")]
    return job, beam_runner_api_pb2.Pipeline.FromString(staged.download_as_bytes())


def leaf_urns(proto: beam_runner_api_pb2.Pipeline) -> set[str]:
    return {t.spec.urn for t in proto.components.transforms.values() if not t.subtransforms}


def top_level_names(proto: beam_runner_api_pb2.Pipeline) -> set[str]:
    (root,) = proto.root_transform_ids
    return {proto.components.transforms[child].unique_name for child in proto.components.transforms[root].subtransforms}


@pytest.mark.parametrize("mode", ["compress", "decompress"])
def test_the_batch_pipeline_translates_for_dataflow_into_a_batch_job_on_our_image(gcs_bucket, mode):
    name = f"batch-{mode}-{uuid.uuid4().hex[:8]}"
    known, pipeline_args = batch.parse_args(["--input=gs://in-bucket/logs/*", "--output=gs://out-bucket/dcz/",
                                             f"--mode={mode}", "--chunk_size=4MiB"]
                                            + dataflow_args(gcs_bucket, name))
    job, proto = translate(gcs_bucket, name, pipeline_args, lambda p: batch.build_pipeline(p, known, "dcas-dry"))

    assert job["type"] == "JOB_TYPE_BATCH"
    (pool,) = job["environment"]["workerPools"]
    assert {image["containerImage"] for image in pool["sdkHarnessContainerImages"]} == {IMAGE}
    assert "use_runner_v2" in job["environment"]["experiments"]
    assert leaf_urns(proto) <= DATAFLOW_URNS, leaf_urns(proto) - DATAFLOW_URNS
    assert {"Start", "Plan files", "Publish", "Report failures"} <= top_level_names(proto)


# Top-level stage names of the streaming graph. `--update` of a running job matches stages (and their state) by
# name: renaming one needs --transform_name_mapping (docs/operations.md), so a rename must be on purpose.
STREAMING_STAGES = {
    "Read jobs", "Parse", "Claim", "Plan", "By operation", "Table given?", "Given tables", "Cut into chunks", "Count",
    "Frequency tables", "Empty files", "Tables", "Encode", "Seek tables", "Plan parts", "Decode", "Parts",
    "Part failures", "Assemble", "Report failures",
}


def test_the_streaming_pipeline_translates_for_dataflow_into_a_streaming_job_with_stable_stage_names(gcs_bucket):
    name = f"streaming-{uuid.uuid4().hex[:8]}"
    known, pipeline_args = streaming.parse_args(
        ["--project=dcas-test", "--subscription=projects/dcas-test/subscriptions/jobs",
         "--jobs_topic=projects/dcas-test/topics/jobs", "--dead_letter_topic=projects/dcas-test/topics/dead"]
        + dataflow_args(gcs_bucket, name))
    job, proto = translate(gcs_bucket, name, pipeline_args, lambda p: streaming.build_pipeline(p, known))

    assert job["type"] == "JOB_TYPE_STREAMING"
    (pool,) = job["environment"]["workerPools"]
    assert {image["containerImage"] for image in pool["sdkHarnessContainerImages"]} == {IMAGE}
    assert leaf_urns(proto) <= DATAFLOW_URNS, leaf_urns(proto) - DATAFLOW_URNS
    assert top_level_names(proto) == STREAMING_STAGES


class _HoldsAGeneratorFn(beam.DoFn):
    def __init__(self):
        # No pickler can carry a generator (nor a client's socket): DoFns build such things in setup().
        self._pending = (n for n in range(3))

    def process(self, element):
        yield element


def test_a_dofn_that_cannot_be_pickled_fails_translation_here(gcs_bucket):
    name = f"unpicklable-{uuid.uuid4().hex[:8]}"
    with pytest.raises(Exception, match="(?i)pickle.*generator"):
        translate(gcs_bucket, name, dataflow_args(gcs_bucket, name),
                  lambda p: p | beam.Impulse() | "Holds a generator" >> beam.ParDo(_HoldsAGeneratorFn()))
