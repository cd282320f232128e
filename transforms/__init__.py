"""DCaS transforms: the Beam building blocks of the batch and streaming pipelines, each a thin PTransform over pure functions."""
from __future__ import annotations

from transforms.assemble import PublishContainers as PublishContainers
from transforms.assemble import PublishDecoded as PublishDecoded
from transforms.decode import DecodeParts as DecodeParts
from transforms.decode import ReadSeekTables as ReadSeekTables
from transforms.encode import EncodeParts as EncodeParts
from transforms.failures import FAILED as FAILED
from transforms.failures import WriteFailures as WriteFailures
from transforms.frequencies import FrequencyTableCombineFn as FrequencyTableCombineFn
from transforms.planning import PlanFiles as PlanFiles
from transforms.planning import Spread as Spread
from transforms.frequencies import CountBytes as CountBytes
from transforms.jobs import ClaimJobs as ClaimJobs
from transforms.jobs import ParseJobMessages as ParseJobMessages
from transforms.jobs import ReadGivenTables as ReadGivenTables
from transforms.jobs import ReportFailures as ReportFailures
from transforms.perjob import AssembleJobs as AssembleJobs
from transforms.perjob import CountTables as CountTables
from transforms.threads import PooledFn as PooledFn

__all__ = [
    "PlanFiles", "Spread", "FrequencyTableCombineFn", "EncodeParts",
    "ReadSeekTables", "DecodeParts", "PublishContainers", "PublishDecoded", "WriteFailures", "FAILED",
    "CountBytes", "ParseJobMessages", "ClaimJobs", "ReadGivenTables", "ReportFailures", "CountTables",
    "AssembleJobs", "PooledFn",
]
