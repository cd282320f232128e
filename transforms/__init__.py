"""DCaS transforms: the Beam building blocks of the batch pipeline, each a thin PTransform over pure functions."""
from __future__ import annotations

from transforms.assemble import PublishContainers as PublishContainers
from transforms.assemble import PublishDecoded as PublishDecoded
from transforms.decode import DecodeParts as DecodeParts
from transforms.decode import ReadSeekTables as ReadSeekTables
from transforms.encode import EncodeParts as EncodeParts
from transforms.failures import FAILED as FAILED
from transforms.failures import WriteFailures as WriteFailures
from transforms.frequencies import FrequencyTableCombineFn as FrequencyTableCombineFn
from transforms.frequencies import FrequencyTables as FrequencyTables
from transforms.planning import PlanChunks as PlanChunks
from transforms.planning import PlanFiles as PlanFiles
from transforms.planning import Spread as Spread

__all__ = [
    "PlanFiles", "PlanChunks", "Spread", "FrequencyTableCombineFn", "FrequencyTables", "EncodeParts",
    "ReadSeekTables", "DecodeParts", "PublishContainers", "PublishDecoded", "WriteFailures", "FAILED",
]
