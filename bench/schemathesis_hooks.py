"""Schemathesis hooks for bench/schemathesis.sh: `/learn` also takes NDJSON streams
(`application/x-ndjson`, one JSON value per line), which Schemathesis has no serializer for.
A generated body is sent as a one-line stream, so stream answers are checked too."""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    return (json.dumps(value) + "\n").encode()
