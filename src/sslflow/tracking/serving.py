"""Serving a registered model (scripts/serve.sh): MLflow's scoring server behind a limit on each request.

`mlflow models serve` reads a request body of any size into memory, parses it and runs the model on every row
(a 100k-image request, 31 MB of JSON, was answered). `limit_requests` bounds a request's rows and bytes.
"""

import json
import os
import sys

from sslflow.cli import run
from sslflow.errors import SslflowError
from sslflow.tracking import tracking_uri

MAX_ROWS = int(os.environ.get("SSLFLOW_SERVE_MAX_ROWS", 1000))
MAX_BYTES = int(os.environ.get("SSLFLOW_SERVE_MAX_BYTES", 16 * 2**20))


def request_rows(body: bytes, content_type: str) -> int | None:
    """How many rows a scoring request holds (JSON's `inputs`, `instances`, `dataframe_split`,
    `dataframe_records`; CSV lines less the header), or None when that cannot be told cheaply (parquet, or a
    body the scoring server will reject anyway)."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "text/csv":
        return max(body.count(b"\n") + (not body.endswith(b"\n")) - 1, 0) if body.strip() else 0
    if kind != "application/json":
        return None
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    data = payload.get("inputs", payload.get("instances", payload.get("dataframe_records")))
    if data is None and isinstance(payload.get("dataframe_split"), dict):
        data = payload["dataframe_split"].get("data")
    if isinstance(data, dict):  # named tensors or columns: the first one's length
        data = next(iter(data.values()), [])
    return len(data) if isinstance(data, list) else None


def limit_requests(app, *, max_rows: int = MAX_ROWS, max_bytes: int = MAX_BYTES):
    """An ASGI app that answers 413 (JSON {"error_code", "message"}, as MLflow's errors) to a request whose body
    is over `max_bytes` (refused from its Content-Length before it is read, or as it streams in) or that holds
    over `max_rows` rows; it passes every other request to `app`."""

    async def refuse(send, message: str) -> None:
        body = json.dumps({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    too_big = f"the request body is over the limit of {max_bytes} bytes (--max-bytes / SSLFLOW_SERVE_MAX_BYTES)"

    async def limited(scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > max_bytes:
            return await refuse(send, f"{too_big}: Content-Length is {int(declared)}; send fewer rows per request")
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > max_bytes:
                return await refuse(send, f"{too_big}; send fewer rows per request")
            if not message.get("more_body"):
                break
        rows = request_rows(bytes(body), headers.get(b"content-type", b"").decode("latin-1"))
        if rows is not None and rows > max_rows:
            return await refuse(
                send, f"the request holds {rows} rows, over the limit of {max_rows} (--max-rows / "
                "SSLFLOW_SERVE_MAX_ROWS); send them in batches"
            )
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        return await app(scope, replay, send)

    return limited


def serve(argv: list[str] | None = None) -> None:
    """scripts/serve.sh: MLflow's scoring server (POST /invocations, GET /ping, as `mlflow models serve
    --env-manager local` runs it) for a registered model, behind `limit_requests`."""
    import argparse

    ap = argparse.ArgumentParser(prog="scripts/serve.sh", add_help=False, description=serve.__doc__)
    ap.add_argument("--help", action="help")
    ap.add_argument("-m", "--model-uri", default="models:/sslflow-image@champion")
    ap.add_argument("-h", "--host", default="127.0.0.1")
    ap.add_argument("-p", "--port", type=int, default=5001)
    ap.add_argument("--max-rows", type=int, default=MAX_ROWS, help="rows per request (default %(default)s)")
    ap.add_argument("--max-bytes", type=int, default=MAX_BYTES, help="bytes per request body (default %(default)s)")
    args = ap.parse_args(argv)
    if args.max_rows < 1 or args.max_bytes < 1:
        raise SslflowError(f"--max-rows ({args.max_rows}) and --max-bytes ({args.max_bytes}) must be at least 1")

    import mlflow
    import uvicorn
    from mlflow.pyfunc import scoring_server

    mlflow.set_tracking_uri(tracking_uri())
    try:
        model = mlflow.pyfunc.load_model(args.model_uri)
    except mlflow.exceptions.MlflowException as err:
        reason = (err.message.strip().splitlines() or ["not found"])[0]
        raise SslflowError(f"cannot load {args.model_uri} from {tracking_uri()}: {reason}") from None
    app = limit_requests(scoring_server.init(model), max_rows=args.max_rows, max_bytes=args.max_bytes)
    print(
        f"serving {args.model_uri} on http://{args.host}:{args.port}/invocations "
        f"(at most {args.max_rows} rows and {args.max_bytes} bytes a request)",
        file=sys.stderr,
    )
    uvicorn.run(app, host=args.host, port=args.port, workers=1)


if __name__ == "__main__":
    run(lambda: serve(sys.argv[1:]))
