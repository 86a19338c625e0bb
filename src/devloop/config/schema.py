"""JSON Schema (draft 2020-12) of workspace.json and agents.json, for editors and CI checks.

The schemas describe what :mod:`devloop.config.load` accepts. They allow unknown keys (devloop
warns about them rather than failing) and cannot express the cross-field checks (unknown project
names, custom totals over the pool); ``devloop workspace validate`` does those.
"""

from __future__ import annotations

from typing import Any

_DRAFT = "https://json-schema.org/draft/2020-12/schema"

_SIZE_PATTERN = r"^\s*([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*([kKmMgGtT]i?[bB]?|[bB])?\s*$"
_SIZE: dict[str, Any] = {
    "description": 'A size: "512MB", "2GB", "1.5GiB" (binary units), or a number of MB.',
    "oneOf": [
        {"type": "string", "pattern": _SIZE_PATTERN},
        {"type": "number", "minimum": 0},
    ],
}  # fmt: skip
_BYTES: dict[str, Any] = {"type": "integer", "minimum": 0, "description": "Bytes."}
_CPU: dict[str, Any] = {
    "type": "number",
    "minimum": 0,
    "maximum": 100,
    "description": "Percent of the whole machine (all cores).",
}
_WINDOW: dict[str, Any] = {
    "type": "string",
    "pattern": r"^\s*\d{1,2}:\d{2}\s*-\s*\d{1,2}:\d{2}\s*$",
    "description": "A daily window HH:MM-HH:MM in local time; may cross midnight.",
}
_RESUME: dict[str, Any] = {
    "type": "number",
    "exclusiveMinimum": 0,
    "maximum": 100,
    "description": "Resume below this share of the limit: 0.8 or 80 (percent).",
}


def _obj(properties: dict[str, Any], description: str = "", **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if description:
        schema["description"] = description
    schema.update(extra)
    return schema


def _limit() -> dict[str, Any]:
    return _obj({"maxCpu": _CPU, "maxMemory": _SIZE, "maxMemory_bytes": _BYTES})


def _pool(with_times: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "cpuLimit": _CPU,
        "memoryLimit": _SIZE,
        "memoryLimit_bytes": _BYTES,
    }
    if with_times:
        properties["times"] = {"type": "array", "items": _WINDOW}
    return _obj(properties)


def workspace_schema() -> dict[str, Any]:
    """The JSON Schema of ``<workspace-dir>/workspace.json``."""
    project = _obj(
        {
            "name": {"type": "string", "minLength": 1},
            "path": {"type": "string", "minLength": 1,
                     "description": "Relative to workspace_root."},
            "enabled": {"type": "boolean", "default": True},
            "priority": {"type": "integer", "minimum": 0, "maximum": 3, "default": 2,
                         "description": "0 critical, 1 high, 2 normal, 3 low."},
            "weight": {"type": "number", "exclusiveMinimum": 0},
            "tags": {"type": "array", "items": {"type": "string"}},
            "description": {"type": "string"},
            "dependencies": {"type": "array", "items": {"type": "string"}},
            "config_override": {"type": "object"},
        },
        required=["name"],
    )  # fmt: skip
    resource_limits = _obj(
        {
            "maxCpu": {**_CPU, "default": 60},
            "maxMemory": {**_SIZE, "default": "2GB"},
            "maxMemory_bytes": _BYTES,
            "checkInterval": {"type": "number", "exclusiveMinimum": 0, "default": 10},
            "checkIntervalSeconds": {"type": "number", "exclusiveMinimum": 0},
            "enforcementAction": {"enum": ["pause", "warn", "throttle"], "default": "pause"},
            "resumeThreshold": {**_RESUME, "default": 0.8},
            "resumeThresholdPercent": _RESUME,
            "overflow": _obj(
                {
                    "enabled": {"type": "boolean", "default": False},
                    "queueing": {"type": "boolean", "default": True},
                    "maxQueueSize": {"type": "integer", "minimum": 0, "default": 50},
                    "maxWaitTime": {"type": "number", "minimum": 0, "default": 300},
                }
            ),
        }
    )
    fraction = {"type": "number", "exclusiveMinimum": 0, "maximum": 1}
    sharing = _obj(
        {
            "strategy": {
                "enum": ["equal", "weighted", "priority", "dynamic", "custom"],
                "default": "equal",
            },
            "cpuLimit": _CPU,
            "memoryLimit": _SIZE,
            "memoryLimit_bytes": _BYTES,
            "weights": {
                "type": "object",
                "additionalProperties": {"type": "number", "exclusiveMinimum": 0},
            },
            "perProjectLimits": {"type": "object", "additionalProperties": _limit()},
            "overcommitCpu": {"type": "boolean", "default": False},
            "adaptation": _obj(
                {
                    "enabled": {"type": "boolean", "default": True},
                    "adjustmentFrequency": {"type": "number", "exclusiveMinimum": 0,
                                            "default": 30},
                    "usageThreshold": {**fraction, "default": 0.8},
                    "reallocationFactor": {**fraction, "default": 0.2},
                }
            ),
            "profiles": {"type": "object", "additionalProperties": _pool(with_times=True)},
        }
    )  # fmt: skip
    return {
        "$schema": _DRAFT,
        "$id": "https://devloop.dev/schemas/workspace.schema.json",
        "title": "DevLoop workspace.json",
        **_obj(
            {
                "type": {"type": "string", "default": "workspace"},
                "version": {"type": "string"},
                "workspace_name": {"type": "string", "minLength": 1},
                "workspace_root": {"type": "string", "minLength": 1},
                "projects": {"type": "array", "items": project},
                "global": _obj(
                    {
                        "maxConcurrentAgents": {"type": "integer", "minimum": 1},
                        "resourceLimits": resource_limits,
                    }
                ),
                "resource_sharing": sharing,
                "resource_profiles": {
                    "type": "object",
                    "additionalProperties": _pool(with_times=False),
                },
            }
        ),
    }


def agents_schema() -> dict[str, Any]:
    """The JSON Schema of a project's ``.devloop/agents.json``."""
    command = {
        "oneOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": "string"}, "minItems": 1},
        ],
        "description": "What the agent runs: a command line or an argument list.",
    }
    agent = _obj(
        {
            "enabled": {"type": "boolean", "default": True},
            "command": command,
            "triggers": {"type": "array", "items": {"type": "string"}},
            "config": {"type": "object"},
            "resourceLimits": _obj(
                {
                    "maxCpu": _CPU,
                    "maxMemory": _SIZE,
                    "maxMemory_bytes": _BYTES,
                    "maxFileHandles": {"type": "integer", "minimum": 1},
                    "maxThreads": {"type": "integer", "minimum": 1},
                }
            ),
        }
    )
    return {
        "$schema": _DRAFT,
        "$id": "https://devloop.dev/schemas/agents.schema.json",
        "title": "DevLoop .devloop/agents.json",
        **_obj(
            {
                "version": {"type": "string"},
                "enabled": {"type": "boolean", "default": True},
                "agents": {"type": "object", "additionalProperties": agent},
                "global": _obj(
                    {
                        "maxConcurrentAgents": {"type": "integer", "minimum": 1},
                        "resourceLimits": _obj(
                            {
                                "maxCpu": _CPU,
                                "maxMemory": _SIZE,
                                "maxMemory_bytes": _BYTES,
                                "checkInterval": {"type": "number", "exclusiveMinimum": 0},
                                "checkIntervalSeconds": {"type": "number", "exclusiveMinimum": 0},
                                "enforcementAction": {"enum": ["pause", "warn", "throttle"]},
                                "resumeThreshold": _RESUME,
                                "resumeThresholdPercent": _RESUME,
                            }
                        ),
                    }
                ),
            }
        ),
    }


SCHEMAS = {"workspace.schema.json": workspace_schema, "agents.schema.json": agents_schema}
