"""The tiny pipeline's model, promoted to champion, serves raw uint8 images: through `mlflow.pyfunc.load_model`
in a fresh process and through `mlflow models serve` over REST."""

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from conftest import env_for, merge
from servers import local_server

from sslflow.artifacts import load_classifier
from sslflow.image.finetune import predict_proba
from sslflow.metrics import read as read_metrics
from sslflow.splits import data_hash
from sslflow.tracking.pyfunc import CPU
from sslflow.tracking.serving import limit_requests, request_rows

REPO = Path(__file__).resolve().parents[1]

slow = pytest.mark.slow  # the tests that serve the tiny pipeline's model

NAME = "sslflow-image"
# The tiny profile's ssl model is barely trained: without the recall floor it can become champion.
NO_RECALL_FLOOR = {"promote": {"min_class_recall": 0.0}}


def set_params(project: Path, changes: dict) -> None:
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(merge(yaml.safe_load(path.read_text()), changes), sort_keys=False))


def promote(project: Path) -> str:
    """The promote stage as dvc.yaml runs it; returns its stdout."""
    proc = subprocess.run(
        [sys.executable, "stages/promote.py"],
        cwd=project,
        env=env_for(project),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def crown(project: Path) -> str:
    """Point `champion` at the challenger by hand, as an operator can. The tiny profile's barely trained model
    is refused by the gate (it is below its own baselines: tests/test_registry.py); serving needs a champion."""
    client = mlflow.MlflowClient(tracking_uri=env_for(project)["MLFLOW_TRACKING_URI"])
    version = str(client.get_model_version_by_alias(NAME, "challenger").version)
    client.set_registered_model_alias(NAME, "champion", version)
    return version


@pytest.fixture(scope="module")
def project(tiny_pipeline, tmp_path_factory):
    """A copy of the session's tiny pipeline (store included), promote (which refuses this model), then the
    champion set by hand. The copy's registry still points at the original's model artifacts, only read."""
    project = tmp_path_factory.mktemp("served") / "project"
    shutil.copytree(tiny_pipeline, project)
    set_params(project, NO_RECALL_FLOOR)
    promote(project)
    crown(project)
    return project


@pytest.fixture(scope="module")
def images(project):
    return np.load(project / "data" / "prepared" / "test_images.npy")[:5]  # (5, 1, 8, 8) uint8


@pytest.fixture(scope="module")
def expected(project, images):
    """The finetuned ssl model's probabilities, computed by the library the pipeline used."""
    return predict_proba(load_classifier(project / "models" / "finetuned", "ssl"), images, CPU)


@slow
def test_evaluate_registers_the_ssl_model_with_its_evidence(project):
    client = mlflow.MlflowClient(tracking_uri=env_for(project)["MLFLOW_TRACKING_URI"])
    version = client.get_model_version_by_alias(NAME, "champion")
    assert {str(v) for v in client.get_registered_model(NAME).aliases.values()} == {str(version.version)}
    metrics = read_metrics(project / "reports")["ssl"]
    per_class = json.loads((project / "reports" / "classification" / "ssl.json").read_text())
    classes = json.loads((project / "data" / "prepared" / "classes.json").read_text())
    run_id = json.loads((project / "reports" / "lineage" / "evaluate.json").read_text())["run_id"]
    assert float(version.tags["sslflow.macro_f1"]) == metrics["macro_f1"]
    assert float(version.tags["sslflow.min_class_recall"]) == min(per_class[c]["recall"] for c in classes)
    assert version.tags["sslflow.data_hash"] == data_hash(project / "data" / "prepared")
    assert version.tags["sslflow.run_id"] == run_id == version.run_id
    assert version.tags["sslflow.git_commit"]
    # the gate refused the barely trained tiny model (below its baselines); the champion was set by hand (crown)
    assert version.tags["sslflow.promotion"].startswith("kept out: not promoted (no champion yet)")
    assert version.tags["sslflow.best_baseline"] in {"scratch-supervised", "classical"}
    promotion = json.loads((project / "reports" / "promotion.json").read_text())
    assert not promotion["promoted"] and promotion["challenger"]["version"] == str(version.version)


FRESH = """
import json, sys
import numpy as np
import mlflow
model = mlflow.pyfunc.load_model("models:/{name}@champion")
out = model.predict(np.load(sys.argv[1]))
print(json.dumps({{
    "frame": out.to_dict(orient="list"),
    "input_schema": model.metadata.get_input_schema(),
    "input_shape": model.metadata.metadata["input_shape"],
    "stages_imported": any(m == "stages" or m.startswith("stages.") for m in sys.modules),
    "sslflow_from": sys.modules["sslflow"].__file__,
}}))
"""


@slow
def test_champion_predicts_raw_images_in_a_fresh_process(project, images, expected, tmp_path):
    np.save(tmp_path / "images.npy", images)
    result = subprocess.run(
        [sys.executable, "-c", FRESH.format(name=NAME), str(tmp_path / "images.npy")],
        cwd=tmp_path,
        env=env_for(project),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    classes = json.loads((project / "data" / "prepared" / "classes.json").read_text())
    frame = out["frame"]
    assert list(frame) == ["label", *(f"proba_{c}" for c in classes)]
    proba = np.array([frame[f"proba_{c}"] for c in classes]).T
    np.testing.assert_allclose(proba, expected, atol=1e-6)
    assert frame["label"] == [classes[i] for i in expected.argmax(1)]
    # no input schema (MLflow would refuse (N, H, W) before predict); predict checks the shape it records
    assert out["input_schema"] is None and out["input_shape"] == [1, 8, 8]
    assert not out["stages_imported"]
    # The model carries the sslflow code it was trained with.
    assert "/code/sslflow/" in out["sslflow_from"]


@pytest.fixture(scope="module")
def server(project, tmp_path_factory):
    """`mlflow models serve` of the champion, as the README runs it, on a free port of 127.0.0.1."""

    def command(port: int) -> list[str]:
        serve = ["mlflow", "models", "serve", "-m", f"models:/{NAME}@champion", "--env-manager", "local"]
        return [*serve, "-h", "127.0.0.1", "-p", str(port)]

    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with local_server(command, cwd=project, env=env_for(project), log=log, health="/ping") as url:
        yield url


def invoke(server: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{server}/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


@slow
def test_rest_invocations_answer_with_label_and_probabilities(server, project, images, expected):
    status, body = invoke(server, {"inputs": images.tolist()})
    assert status == 200
    classes = json.loads((project / "data" / "prepared" / "classes.json").read_text())
    rows = body["predictions"]
    assert [row["label"] for row in rows] == [classes[i] for i in expected.argmax(1)]
    proba = np.array([[row[f"proba_{c}"] for c in classes] for row in rows])
    np.testing.assert_allclose(proba, expected, atol=1e-6)


@slow
@pytest.mark.parametrize(
    "inputs",
    [
        lambda x: x[:, :, :4].tolist(),  # a crop: not the training shape
        lambda x: (x.astype(int) + 300).tolist(),  # not uint8
        lambda x: x[0, 0].tolist(),  # one image with neither batch nor channel axis ((N, H, W) is accepted)
    ],
    ids=["wrong-shape", "out-of-range", "one-2d-image"],
)
def test_rest_rejects_inputs_outside_the_signature(server, images, inputs):
    status, body = invoke(server, {"inputs": inputs(images)})
    assert status == 400 and body["message"]


def asgi(app, body: bytes, content_type: str = "application/json", chunks: int = 1, declare: bool = True):
    """One POST /invocations through the ASGI `app`, its body sent in `chunks` parts; returns (status, body, how
    many bytes the inner app read)."""
    import asyncio

    headers = [(b"content-type", content_type.encode())]
    if declare:
        headers.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": headers}
    size = -(-len(body) // chunks) or 1
    parts = [body[i : i + size] for i in range(0, max(len(body), 1), size)]
    sent = []

    async def receive():
        part = parts.pop(0) if parts else b""
        return {"type": "http.request", "body": part, "more_body": bool(parts)}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"]), sent


async def echo(scope, receive, send):
    """A stand-in for the scoring server: answers 200 with the size of the body it read."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps({"read": len(body)}).encode()})


def test_request_rows_counts_every_input_format():
    rows = [[1, 2], [3, 4], [5, 6]]
    assert request_rows(json.dumps({"inputs": rows}).encode(), "application/json") == 3
    assert request_rows(json.dumps({"instances": rows}).encode(), "application/json; charset=utf-8") == 3
    assert request_rows(json.dumps({"dataframe_split": {"columns": ["a", "b"], "data": rows}}).encode(),
                        "application/json") == 3
    assert request_rows(json.dumps({"dataframe_records": [{"a": 1}] * 3}).encode(), "application/json") == 3
    assert request_rows(json.dumps({"inputs": {"x": rows}}).encode(), "application/json") == 3
    assert request_rows(b"a,b\n1,2\n3,4\n5,6\n", "text/csv") == 3
    assert request_rows(b"not json", "application/json") is None


def test_a_request_within_the_limits_reaches_the_model():
    body = json.dumps({"inputs": [[0] * 64] * 4}).encode()
    status, answer, _ = asgi(limit_requests(echo, max_rows=4, max_bytes=len(body)), body, chunks=3)
    assert status == 200 and answer == {"read": len(body)}


def test_too_many_rows_is_413_before_the_model_runs():
    body = json.dumps({"inputs": [[0] * 64] * 5}).encode()
    status, answer, _ = asgi(limit_requests(echo, max_rows=4, max_bytes=10**6), body)
    assert status == 413 and "holds 5 rows, over the limit of 4" in answer["message"]


@pytest.mark.parametrize("declare", [True, False], ids=["content-length", "streamed"])
def test_too_many_bytes_is_413(declare):
    """Refused from its Content-Length, or as it streams in without one: never read whole into memory."""
    body = json.dumps({"inputs": [[0] * 64] * 100}).encode()
    status, answer, _ = asgi(limit_requests(echo, max_rows=10**6, max_bytes=1000), body, chunks=20, declare=declare)
    assert status == 413 and "over the limit of 1000 bytes" in answer["message"]


@pytest.fixture(scope="module")
def limited_server(project, tmp_path_factory):
    """scripts/serve.sh of the champion, as the README runs it, with small limits."""

    def command(port: int) -> list[str]:
        return ["bash", str(REPO / "scripts" / "serve.sh"), "-p", str(port), "--max-rows", "4", "--max-bytes", "20000"]

    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with local_server(command, cwd=project, env=env_for(project), log=log, health="/ping") as url:
        yield url


@slow
def test_served_model_refuses_requests_over_the_limits(limited_server, images, expected):
    status, body = invoke(limited_server, {"inputs": images[:3].tolist()})
    assert status == 200 and len(body["predictions"]) == 3
    status, body = invoke(limited_server, {"inputs": images.tolist()})  # 5 rows
    assert status == 413 and "holds 5 rows, over the limit of 4" in body["message"]
    many = np.repeat(images, 20, axis=0)  # 100 images, about 25 kB of JSON
    status, body = invoke(limited_server, {"inputs": many.tolist()})
    assert status == 413 and "over the limit of 20000 bytes" in body["message"]
