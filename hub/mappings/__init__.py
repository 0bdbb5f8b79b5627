"""Declarative mappings: TOML files turning pseudonymised source records into
common-schema records.

A mapping file is validated with pydantic (closed models, transforms a
discriminated union on ``type``), checked against the common-schema models and
compiled once into plain callables. There is no expression language and no
``eval``: a closed set of transforms covers renames, constants, code tables,
dates, numbers, booleans, lists and fallbacks. See ``docs/mappings.md``.
"""

from hub.mappings.engine import (
    CompiledMapping,
    MappedRecord,
    MappingProblem,
    MappingResult,
)
from hub.mappings.load import (
    check_mapping,
    compile_mapping,
    load_mapping,
    mapping_json_schema,
    mapping_json_schema_text,
    parse_mapping,
    unknown_sources,
)
from hub.mappings.model import MappingFile

__all__ = [
    "CompiledMapping",
    "MappedRecord",
    "MappingFile",
    "MappingProblem",
    "MappingResult",
    "check_mapping",
    "compile_mapping",
    "load_mapping",
    "mapping_json_schema",
    "mapping_json_schema_text",
    "parse_mapping",
    "unknown_sources",
]
