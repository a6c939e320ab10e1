"""The OpenAPI description served at /openapi.json; tests hold the API to it."""

from __future__ import annotations

from typing import Any

from rates.settings import Settings, package_version


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def spec(settings: Settings) -> dict[str, Any]:
    date_param = {
        "in": "query",
        "required": True,
        "schema": {"type": "string", "format": "date", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
    }
    code_param = {
        "in": "query",
        "required": True,
        "description": "A port code such as CNGGZ, matched exactly (a region slug matches nothing)",
        "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"},
    }
    status = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "rates", "version": package_version()},
        "paths": {
            "/": {
                "get": {
                    "summary": "Greeting",
                    "responses": {
                        "200": _ok(
                            "Hello",
                            {
                                "type": "object",
                                "required": ["message"],
                                "properties": {"message": {"type": "string"}},
                            },
                        )
                    },
                }
            },
            "/rates": {
                "get": {
                    "summary": "Average price per day between two ports",
                    "description": (
                        "One entry per day from date_to down to date_from. count is null on a "
                        "day with no prices; price is null on a day with fewer than 3 prices. "
                        f"At most {settings.max_range_days} days per request."
                    ),
                    "parameters": [
                        {"name": "date_from", **date_param},
                        {"name": "date_to", **date_param},
                        {"name": "orig_code", **code_param},
                        {"name": "dest_code", **code_param},
                    ],
                    "responses": {
                        "200": _ok("Daily rates", {"$ref": "#/components/schemas/Rates"}),
                        "400": _error(
                            "A parameter is missing or malformed, or the range is too long"
                        ),
                        "503": _error("The database cannot answer now"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness: the process is up (no database)",
                    "responses": {
                        "200": {
                            **_ok("Alive", status),
                            "headers": {
                                "Rates-Build": {
                                    "description": (
                                        "The release that answers: the package version, "
                                        "and +RATES_BUILD when that is set"
                                    ),
                                    "required": True,
                                    "schema": {"type": "string"},
                                }
                            },
                        }
                    },
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: the database answers a real query",
                    "responses": {
                        "200": _ok("Ready", status),
                        "503": _error("The database cannot answer now"),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This description",
                    "responses": {"200": _ok("OpenAPI 3.0 document", {"type": "object"})},
                }
            },
        },
        "components": {
            "schemas": {
                "Rates": {
                    "type": "object",
                    "required": ["rates"],
                    "properties": {
                        "rates": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["day", "count", "price"],
                                "properties": {
                                    "day": {"type": "string", "format": "date"},
                                    "count": {"type": "integer", "minimum": 1, "nullable": True},
                                    "price": {"type": "number", "nullable": True},
                                },
                                "additionalProperties": False,
                            },
                        }
                    },
                    "additionalProperties": False,
                },
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
            }
        },
    }
