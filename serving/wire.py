"""Request bodies in, response formats out: the HTTP wire of /v1/rank and /admin/reload.

A body is read under a size limit (413 before it is all read; 415 if compressed), decoded
by its content type (JSON and msgpack through pydantic, Arrow IPC through `arrow_wire`),
and the response is written in the format the client's Accept header prefers.
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

import msgpack
from fastapi import Request
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from serving.arrow_wire import ARROW_STREAM, decode_request
from serving.schema import (FieldError, RankArrays, RankOptions, RankRequest,
                            parse_json_model, parse_model, request_arrays)

JSON_TYPES = ("application/json",)
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
ARROW_TYPES = (ARROW_STREAM,)
WIRE_TYPES = {"json": JSON_TYPES, "msgpack": MSGPACK_TYPES, "arrow": ARROW_TYPES}
BODY_TYPES = ("application/json", "application/msgpack")   # what parse_body decodes, by name
RANK_TYPES = (*BODY_TYPES, ARROW_STREAM)                    # /v1/rank also takes Arrow


class ClientGone(Exception):
    """The client disconnected before its whole body arrived: nobody to answer, no error
    of ours (it was a 500 "internal" with a traceback in the log per connection)."""


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The request body, refusing (413) anything over `limit` bytes before reading it all,
    and (415) a compressed one: it would otherwise fail to parse as "malformed JSON". A
    body not all received within `timeout_s` is a 408: a client that stalled part way held
    its connection, its handler and the chunks read so far for good."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise FieldError("content-encoding", f"{encoding!r} is not supported; send the body "
                         "uncompressed", 415)
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise FieldError("content-length", f"not an integer: {declared!r}", 400) from None
        if size > limit:
            raise FieldError("body", f"{size} bytes exceed the limit {limit}", 413)
    chunks, total = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    raise FieldError("body", f"more than the limit of {limit} bytes", 413)
                chunks.append(chunk)
    except TimeoutError:
        raise FieldError("body", f"not all received within {timeout_s:g} s (--body-timeout; "
                                 f"{total} bytes arrived)", 408) from None
    except ClientDisconnect:
        raise ClientGone(f"the client disconnected after {total} bytes of its body") from None
    return b"".join(chunks)


def _media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def parse_body(cls: type[BaseModel], body: bytes, content_type: str,
               accepted: Sequence[str] = BODY_TYPES) -> tuple[BaseModel, bool]:
    """-> (validated `cls`, is_msgpack). 415 on other content types, naming `accepted` (the
    media types the endpoint takes: JSON and msgpack are decoded here, the caller decodes
    any other first), 400 on undecodable bodies, 422 naming the field on invalid ones. JSON
    is validated straight from the bytes.
    """
    ctype = _media_type(content_type)
    if ctype in JSON_TYPES:
        return parse_json_model(cls, body), False
    if ctype in MSGPACK_TYPES:
        try:
            obj = msgpack.unpackb(body, raw=False, strict_map_key=True)
        except Exception as e:  # noqa: BLE001 - msgpack raises many types on garbage
            raise FieldError("body", f"malformed msgpack: {type(e).__name__}", 400) from None
        return parse_model(cls, obj), True
    use = accepted[-1] if len(accepted) < 2 else f"{', '.join(accepted[:-1])} or {accepted[-1]}"
    raise FieldError("content-type", f"{ctype or '(none)'} is not supported; use {use}", 415)


def parse_rank_body(body: bytes, content_type: str, features: Any,
                    max_candidates: int) -> tuple[RankOptions, RankArrays, str]:
    """A /v1/rank body -> (scalar fields, feature arrays, wire format: "json", "msgpack" or
    "arrow"). The same statuses and field paths whatever the format."""
    if _media_type(content_type) in ARROW_TYPES:
        return (*decode_request(body, features, max_candidates), "arrow")
    req, is_msgpack = parse_body(RankRequest, body, content_type, RANK_TYPES)
    return req, request_arrays(req, features, max_candidates), (
        "msgpack" if is_msgpack else "json")


def _quality(item: str) -> float:
    """The q-value of one Accept item (1 without one; 0, "not acceptable", if malformed)."""
    for param in item.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value)
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def response_wire(accept: str, request_wire: str, *, arrow: bool = True) -> str:
    """The format to answer in: of ours, the one the Accept header prefers (highest q,
    the first named on a tie; q=0 means "not this one"; Arrow only when `arrow`: pyarrow
    is installed), else the request's own."""
    best, best_q = request_wire, 0.0
    for item in accept.split(","):
        ctype, q = _media_type(item), _quality(item)
        for wire, types in WIRE_TYPES.items():
            if ctype in types and (arrow or wire != "arrow") and q > best_q:
                best, best_q = wire, q
    return best
