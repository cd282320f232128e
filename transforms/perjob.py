"""Per-job aggregation for the job service: stateful DoFns keyed by (job id, attempt) instead of groupings.

A streaming pipeline in the global window cannot group without a trigger, count-based triggers
count a duplicate twice, and a window per job drops a job as late data behind a slow one; state
keyed by job holds up in all three cases. Each job's state is cleared when the job is published,
fails, or times out.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
import typing

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec, CombiningValueStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer,
)
from apache_beam.io.filesystems import FileSystems

from codec import container
from adapters import storage, tracing
from adapters.jobs import Failure, JobState, TransitionRefused
from adapters.status import CoalescedProgress
from transforms.assemble import (
    FileResult, compress_part_count, count_published, decode_part_count, metadata_path, publish_container,
    publish_decoded,
)
from transforms.decode import ContainerJob
from transforms.failures import FAILED
from transforms.frequencies import FrequencyTableCombineFn, job_key
from transforms.observability import inc_counter, log_event
from transforms.planning import FileJob, chunk_count

__all__ = ["DEFAULT_TIMEOUT", "DEFAULT_HEARTBEAT", "JOB", "PART", "FAILURE", "OPEN", "attempt_key", "job_of", "expected_parts",
           "missing_parts", "decoded_metadata", "publish_job", "CountTables",
           "AssembleJobs"]

# Seconds without a new part (or chunk) after which a job's state is given up.
DEFAULT_TIMEOUT = 600.0
# Seconds between heartbeats of an open job (well under services.config's stale_after of 120 s).
DEFAULT_HEARTBEAT = 30.0
# What the assembler is told, as `(attempt_key, (tag, value))`.
JOB = "job"          # (FileJob, table) on compress, (ContainerJob, None) on decompress
PART = "part"        # a PartRecord
FAILURE = "failure"  # a Failure of one of the job's parts: the job is over
OPEN = "open"        # a JobRequest just claimed: heartbeats start before its plan or parts arrive


def attempt_key(job_id: str, attempt: int) -> str:
    """The state key of one attempt of one job: two attempts never share state."""
    return f"{job_id}#{attempt}"


def job_of(planned) -> FileJob:
    return planned.job if isinstance(planned, ContainerJob) else planned


def expected_parts(planned) -> int:
    return decode_part_count(planned) if isinstance(planned, ContainerJob) else compress_part_count(planned)


def total_chunks(planned) -> int:
    if isinstance(planned, ContainerJob):
        return len(planned.entries)
    return chunk_count(planned.size, planned.chunk_size)


def missing_parts(expected: int, indices) -> list[int]:
    """Part indices 0..expected-1 not among `indices`."""
    have = set(indices)
    return [index for index in range(expected) if index not in have]


def decoded_metadata(container_job: ContainerJob, timings: dict) -> dict:
    """The metadata of a decompressed output, with the same seed fields as a container's."""
    entries = container_job.entries
    original = sum(entry.original_size for entry in entries)
    return {
        "filename": FileSystems.split(container_job.job.source)[1],
        "source": container_job.job.source,
        "output": container_job.job.destination,
        "og_size": original,
        "cp_size": container_job.job.size,
        "ratio": round(original / container_job.job.size, 6) if original else 0.0,
        "chunks": len(entries),
        "checksums": {"algorithm": "crc32c", "chunks": [f"{e.crc:08x}" for e in entries]},
        "codec": {"name": "dcz", "format_version": container.FORMAT_VERSION},
        "timings": timings,
    }


def _publish_metadata(description: dict, destination: str, temp_dir: str) -> None:
    meta = FileSystems.join(temp_dir, FileSystems.split(destination)[1] + ".meta")
    with storage.open_write(meta) as f:
        f.write(json.dumps(description, separators=(",", ":")).encode("utf-8") + b"\n")
    storage.publish_concatenation([meta], metadata_path(destination), temp_dir=temp_dir)


def publish_job(planned, table, records) -> FileResult:
    """Publishes one job's output and its `DST.meta.json` from its parts, then removes its temp
    folder and those of the job's earlier attempts (a crashed attempt leaves its own behind).

    Idempotent, as publish_container and publish_decoded are: the same parts publish the same bytes.
    """
    job = job_of(planned)
    with tracing.span("publish", job_id=job.job_id, destination=job.destination, parts=len(records)):
        return _publish_job(planned, table, records)


def _publish_job(planned, table, records) -> FileResult:
    job = job_of(planned)
    started = time.perf_counter()
    if isinstance(planned, ContainerJob):
        result = publish_decoded(planned, records, job.temp_dir)
        timings = {"worker_seconds": round(sum(r.seconds for r in records), 6),
                   "slowest_part_seconds": round(max((r.seconds for r in records), default=0.0), 6),
                   "publish_seconds": round(time.perf_counter() - started, 6)}
        _publish_metadata(decoded_metadata(planned, timings), job.destination, job.temp_dir)
    else:
        result = publish_container(job, records, job.chunk_size, table, job.temp_dir)
    for attempt in range(job.attempt, 0, -1):
        _remove_quietly(storage.temp_dir_for(job.destination, job.job_id, attempt))
    return result


def _ratio(planned, result: FileResult) -> float:
    """Original size over compressed size, whichever way the job went."""
    original, compressed = ((result.bytes_out, result.bytes_in) if isinstance(planned, ContainerJob)
                            else (result.bytes_in, result.bytes_out))
    return round(original / compressed, 6) if original and compressed else 0.0


# --- frequency tables -----------------------------------------------------------------------------


# Keys are strings (attempt_key): typed, so Beam picks a deterministic key coder for the state.
@beam.typehints.with_input_types(typing.Tuple[str, typing.Any])
class _CountTableFn(beam.DoFn):
    """(attempt key, (job, chunk index, histogram)) -> (job_key, table) once every chunk is counted.

    A chunk counted twice (a replayed element) is counted once. A chunk that cannot be read fails
    the job elsewhere (the dead-letter path), so a table that never completes is only dropped when
    its timer fires, `timeout` seconds after its last chunk.
    """

    CHUNKS = BagStateSpec("chunks", VarIntCoder())
    TABLE = CombiningValueStateSpec("table", PickleCoder(), FrequencyTableCombineFn())
    EXPIRY = TimerSpec("expiry", TimeDomain.REAL_TIME)

    def __init__(self, timeout: float):
        self._timeout = timeout

    def process(self, element, chunks=beam.DoFn.StateParam(CHUNKS), table=beam.DoFn.StateParam(TABLE),
                expiry=beam.DoFn.TimerParam(EXPIRY)):
        key, (job, index, histogram) = element
        seen = set(chunks.read())
        if index in seen:
            inc_counter("chunks-duplicate")
            return
        table.add(histogram)
        if len(seen) + 1 < chunk_count(job.size, job.chunk_size):
            chunks.add(index)
            expiry.set(time.time() + self._timeout)
            return
        counted = table.read()
        chunks.clear()
        table.clear()
        expiry.clear()
        yield job_key(job), counted

    @on_timer(EXPIRY)
    def expire(self, key=beam.DoFn.KeyParam, chunks=beam.DoFn.StateParam(CHUNKS),
               table=beam.DoFn.StateParam(TABLE)):
        log_event("table-expired", key.split("#")[0], level=logging.WARNING, key=key,
                  chunks_counted=len(set(chunks.read())))
        chunks.clear()
        table.clear()


def _keyed_histogram(keyed):
    key, (index, histogram) = keyed
    job = FileJob(*key)
    return attempt_key(job.job_id, job.attempt), (job, index, histogram)


@dataclasses.dataclass
class CountTables(beam.PTransform):
    """`(job_key, (chunk index, histogram))` -> `(job_key, table)` per job, summed with
    FrequencyTableCombineFn in per-job state (each chunk counted once)."""

    timeout: float = DEFAULT_TIMEOUT

    def expand(self, histograms):
        return (histograms
                | "Key by attempt" >> beam.Map(_keyed_histogram)
                | "Sum per job" >> beam.ParDo(_CountTableFn(self.timeout)))


# --- assembly -------------------------------------------------------------------------------------


@beam.typehints.with_input_types(typing.Tuple[str, typing.Any])
class _AssembleJobFn(beam.DoFn):
    """(attempt key, (tag, value)) -> FileResult when the job's plan and every part are in; FAILED
    for a part failure, a publication error or a timeout.

    The one writer of the job's progress (coalesced) and of SUCCEEDED, written last, after the
    output and its metadata. A part that arrives twice counts once. When the job ends its plan and
    parts are cleared at once; an `ended` mark stays for `timeout` seconds more, so that elements
    still in flight for the job (a part encoded after another failed) are dropped and their temp
    objects removed, then it goes too. Never raises.
    """

    PLAN = BagStateSpec("plan", PickleCoder())
    PARTS = BagStateSpec("parts", PickleCoder())
    ENDED = ReadModifyWriteStateSpec("ended", VarIntCoder())
    TIMEOUT = TimerSpec("timeout", TimeDomain.REAL_TIME)
    # From the claim until the job ends: a heartbeat every `heartbeat` seconds, so a job whose
    # chunks are still being counted or encoded (nothing reaches this DoFn meanwhile) is not taken
    # for one whose worker died. Before the plan arrives it beats for at most `timeout` seconds.
    OPENED = ReadModifyWriteStateSpec("opened", PickleCoder())  # (job id, attempt, beat until)
    HEARTBEAT = TimerSpec("heartbeat", TimeDomain.REAL_TIME)

    def __init__(self, status_spec, timeout: float, progress_interval: float = 1.0,
                 heartbeat: float = DEFAULT_HEARTBEAT, clock=time.time):
        self._status_spec = status_spec
        self._timeout = timeout
        self._progress_interval = progress_interval
        self._heartbeat = heartbeat
        self._clock = clock  # processing time: injectable, so TestStream's clock can drive the timers

    def setup(self):
        self._store = self._status_spec.open()
        self._progress: dict[str, CoalescedProgress] = {}

    def process(self, element, plan_state=beam.DoFn.StateParam(PLAN), parts_state=beam.DoFn.StateParam(PARTS),
                ended=beam.DoFn.StateParam(ENDED), timeout=beam.DoFn.TimerParam(TIMEOUT),
                opened=beam.DoFn.StateParam(OPENED), heartbeat=beam.DoFn.TimerParam(HEARTBEAT)):
        key, (tag, value) = element
        if ended.read():
            _discard(key, tag, value)
            return
        if tag == OPEN:
            if opened.read() is None:
                now = self._clock()
                opened.write((value.job_id, value.attempt, now + self._timeout))
                heartbeat.set(now + self._heartbeat)
            return
        plans = list(plan_state.read())
        parts = {record.index: record for record in parts_state.read()}
        if tag == FAILURE:
            self._end(key, plans, parts, plan_state, parts_state, ended, timeout)
            yield beam.pvalue.TaggedOutput(FAILED, value)
            return
        if tag == JOB:
            if plans:  # the plan came twice
                return
            plan_state.add(value)
            plans = [value]
        elif value.index in parts:
            inc_counter("parts-duplicate")
            log_event("part-duplicate", value.job_id, attempt=value.attempt, part=value.index)
            return
        else:
            parts_state.add(value)
            parts[value.index] = value
        if not plans:
            timeout.set(time.time() + self._timeout)
            return
        planned, table = plans[0]
        if len(parts) < expected_parts(planned):
            # On the plan too: the job's size is known, and the write is a heartbeat after counting.
            self._report_progress(key, planned, parts.values())
            timeout.set(time.time() + self._timeout)
            return
        self._end(key, [], {}, plan_state, parts_state, ended, timeout)
        job = job_of(planned)
        # Made inside the span and emitted after it: a span must not stay open across a yield.
        with tracing.span("assemble", parent=job.trace_context, job_id=job.job_id, attempt=job.attempt,
                          parts=len(parts)):
            outputs = list(self._finish(planned, table, [parts[i] for i in sorted(parts)]))
        yield from outputs

    def _finish(self, planned, table, records):
        job = job_of(planned)
        if not self._still_running(job):
            _remove_quietly(job.temp_dir)
            return
        try:
            result = publish_job(planned, table, records)
        except Exception as e:  # noqa: BLE001 - any error fails this job only
            _remove_quietly(job.temp_dir)
            yield beam.pvalue.TaggedOutput(FAILED, job.failure("publish", e))
            return
        count_published(result)
        try:
            self._store.transition(job.job_id, JobState.SUCCEEDED, job.attempt, output=job.destination,
                                   metadata=metadata_path(job.destination), bytes_in=result.bytes_in,
                                   bytes_out=result.bytes_out, ratio=_ratio(planned, result),
                                   chunks_done=result.chunks, chunks_total=result.chunks)
        except TransitionRefused as e:
            # Another attempt, a cancel or a duplicate finished it: the same bytes are in place.
            log_event("success-not-recorded", job.job_id, level=logging.WARNING, attempt=job.attempt,
                      reason=str(e))
            return
        except Exception as e:  # noqa: BLE001 - the job stays RUNNING; the reconciler runs it again
            log_event("success-not-recorded", job.job_id, level=logging.ERROR, attempt=job.attempt,
                      error=repr(e))
            return
        inc_counter("jobs-succeeded")
        log_event("job-succeeded", job.job_id, attempt=job.attempt, output=job.destination,
                  bytes_in=result.bytes_in, bytes_out=result.bytes_out, chunks=result.chunks,
                  trace_id=tracing.trace_id_of(job.trace_context))
        yield result

    def _still_running(self, job: FileJob) -> bool:
        """False when the job was cancelled (or finished by another attempt) while it ran: then
        nothing is published. A store that cannot answer counts as running (the transition to
        SUCCEEDED checks again)."""
        try:
            status = self._store.get(job.job_id)
        except Exception as e:  # noqa: BLE001 - see above
            log_event("status-not-read", job.job_id, level=logging.WARNING, error=repr(e))
            return True
        if status is not None and status.state is JobState.RUNNING and status.attempt == job.attempt:
            return True
        log_event("job-not-published", job.job_id, attempt=job.attempt,
                  state=status.state.value if status else None, current_attempt=status.attempt if status else None)
        inc_counter("jobs-not-published")
        return False

    @on_timer(HEARTBEAT)
    def beat(self, key=beam.DoFn.KeyParam, fired=beam.DoFn.TimestampParam, plan_state=beam.DoFn.StateParam(PLAN),
             ended=beam.DoFn.StateParam(ENDED), opened=beam.DoFn.StateParam(OPENED),
             heartbeat=beam.DoFn.TimerParam(HEARTBEAT)):
        """A heartbeat while the job is open; stops when it ends, when the store refuses it (the job
        is no longer RUNNING on this attempt) or, before its plan arrives, `timeout` after the claim."""
        state = opened.read()
        if state is None:
            return
        job_id, attempt, beat_until = state
        now = float(fired)
        planned = bool(list(plan_state.read()))
        if ended.read() or (not planned and now > beat_until):
            opened.clear()
            return
        progress = self._progress.get(key)
        if progress is None:
            progress = self._progress[key] = CoalescedProgress(self._store, job_id, attempt, self._progress_interval)
        try:
            progress.beat()
        except Exception as e:  # noqa: BLE001 - the next beat tries again
            log_event("heartbeat-not-written", job_id, level=logging.WARNING, error=repr(e))
        if not progress.current:
            opened.clear()
            return
        inc_counter("heartbeats")
        heartbeat.set(now + self._heartbeat)  # from the firing time, not the clock: no drift, no loop

    @on_timer(TIMEOUT)
    def expire(self, key=beam.DoFn.KeyParam, plan_state=beam.DoFn.StateParam(PLAN),
               parts_state=beam.DoFn.StateParam(PARTS), ended=beam.DoFn.StateParam(ENDED),
               timeout=beam.DoFn.TimerParam(TIMEOUT)):
        if ended.read():
            ended.clear()  # the last of the job's state
            return
        plans = list(plan_state.read())
        parts = {record.index: record for record in parts_state.read()}
        if not plans and not parts:  # a timer that outlived its state: nothing is waiting
            return
        job_id, attempt = key.rsplit("#", 1)
        if plans:
            planned = plans[0][0]
            missing = missing_parts(expected_parts(planned), parts)
            failure = job_of(planned).failure("assemble", TimeoutError(
                f"parts {missing[:10]} of {expected_parts(planned)} did not arrive within {self._timeout:g} s"))
        else:
            source = next(iter(parts.values())).source if parts else ""
            failure = Failure.of(job_id, source, "assemble", TimeoutError(
                f"{len(parts)} part(s) arrived for a job that was never planned"), int(attempt))
        self._end(key, plans, parts, plan_state, parts_state, ended, timeout)
        yield beam.pvalue.TaggedOutput(FAILED, failure)

    def _end(self, key, plans, parts, plan_state, parts_state, ended, timeout) -> None:
        """Forgets the job's plan and parts and removes their temp objects (its attempt's folder,
        or stray parts); keeps the `ended` mark until the timer fires again."""
        self._progress.pop(key, None)
        if plans:
            _remove_quietly(job_of(plans[0][0]).temp_dir)
        elif parts:
            _delete_quietly([record.path for record in parts.values()])
        plan_state.clear()
        parts_state.clear()
        ended.write(1)
        timeout.set(time.time() + self._timeout)

    def _report_progress(self, key: str, planned, parts) -> None:
        """Progress over the distinct parts in, coalesced; a failed write is left to the next one."""
        job = job_of(planned)
        progress = self._progress.get(key)
        if progress is None:
            progress = self._progress[key] = CoalescedProgress(self._store, job.job_id, job.attempt,
                                                               self._progress_interval)
        parts = list(parts)
        try:
            progress.update(sum(r.chunks for r in parts), total_chunks(planned),
                            sum(r.bytes_in for r in parts), sum(r.bytes_out for r in parts))
        except Exception as e:  # noqa: BLE001 - progress is advice; the final state carries the counts
            log_event("progress-not-written", job.job_id, level=logging.WARNING, error=repr(e))


def _discard(key: str, tag: str, value) -> None:
    """Drops an element that arrived after its job ended, with the temp objects it stands for."""
    inc_counter("late-elements")
    log_event("late-element", key.rsplit("#", 1)[0], key=key, tag=tag)
    if tag == JOB:
        _remove_quietly(job_of(value[0]).temp_dir)
    elif tag == PART:
        _delete_quietly([value.path])


def _remove_quietly(temp_dir: str) -> None:
    try:
        storage.remove_job_temp_dir(temp_dir)
    except Exception as e:  # noqa: BLE001 - leftovers are garbage, not a failure
        log_event("temp-not-removed", "", level=logging.WARNING, temp_dir=temp_dir, error=repr(e))


def _delete_quietly(paths) -> None:
    try:
        storage.delete(paths)
    except Exception as e:  # noqa: BLE001 - leftovers are garbage, not a failure
        log_event("temp-not-removed", "", level=logging.WARNING, paths=list(paths)[:3], error=repr(e))


def _plan_of_table(keyed_table):
    key, table = keyed_table
    job = FileJob(*key)
    return attempt_key(job.job_id, job.attempt), (JOB, (job, table))


def _plan_of_container(container_job: ContainerJob):
    job = container_job.job
    return attempt_key(job.job_id, job.attempt), (JOB, (container_job, None))


def _part_of(record):
    return attempt_key(record.job_id, record.attempt), (PART, record)


def _open_of(request):
    return attempt_key(request.job_id, request.attempt), (OPEN, request)


def _failure_of(failure: Failure):
    return attempt_key(failure.job_id, failure.attempt), (FAILURE, failure)


@dataclasses.dataclass
class AssembleJobs(beam.PTransform):
    """`(tables, containers, records, failures)` -> `(results, failures)`: each job published once
    all its parts are in, then SUCCEEDED in `status_spec`'s store.

    `tables` are compress jobs' `(job_key, table)`, `containers` decompress jobs' ContainerJobs,
    `records` PartRecords and `failures` the part steps' Failures, which end their job at once.
    A job missing a part for `timeout` seconds fails. An optional fifth input, the claimed
    JobRequests, opens each job at its claim: from then on its heartbeat is kept fresh every
    `heartbeat` seconds, while its chunks are counted and encoded, until it ends.
    """

    status_spec: object
    timeout: float = DEFAULT_TIMEOUT
    progress_interval: float = 1.0
    heartbeat: float = DEFAULT_HEARTBEAT
    clock: typing.Callable[[], float] = time.time

    def expand(self, inputs):
        tables, containers, records, failures, *claimed = inputs
        keyed = [tables | "Plan of table" >> beam.Map(_plan_of_table),
                 containers | "Plan of container" >> beam.Map(_plan_of_container),
                 records | "Key parts" >> beam.Map(_part_of),
                 failures | "Key failures" >> beam.Map(_failure_of)]
        keyed += [requests | "Open jobs" >> beam.Map(_open_of) for requests in claimed]
        assembled = (
            keyed
            | "Flatten per job" >> beam.Flatten().with_output_types(typing.Tuple[str, typing.Any])
            | "Assemble" >> beam.ParDo(_AssembleJobFn(self.status_spec, self.timeout, self.progress_interval,
                                                      self.heartbeat, self.clock)
                                       ).with_outputs(FAILED, main="results"))
        return assembled.results, assembled[FAILED]
