"""Team access on an MLflow server that runs the basic-auth app (scripts/team_server.sh): users, and who may do what.

Two roles, in MLflow's own permissions. Everyone gets EDIT on the experiment (to log runs and models). On the
registered models, a maintainer gets MANAGE and a contributor READ. MLflow's server checks every registry write:
registering a version and moving an alias both need EDIT on the registered model, so a contributor's evaluate
logs its model in its run without registering it, and a contributor's promote is refused before any alias moves
(tracking/registry.py). The admin's credentials come from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sslflow.errors import SslflowError

ROLES = {"maintainer": "MANAGE", "contributor": "READ"}  # the permission on the registered models
EXPERIMENT_PERMISSION = "EDIT"
MAY_WRITE_REGISTRY = ("EDIT", "MANAGE")  # what MLflow requires to register a version or set an alias


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def user() -> str | None:
    """The user the MLflow client sends (basic auth), if any."""
    return os.environ.get("MLFLOW_TRACKING_USERNAME") or None


@contextmanager
def _errors(uri: str, action: str) -> Iterator[None]:
    try:
        yield
    except SslflowError:
        raise
    except Exception as err:  # MlflowException, connection errors
        code = getattr(err, "error_code", "")
        if code == "UNAUTHENTICATED":
            raise SslflowError(f"MLflow server {uri}: cannot {action}: {refused_login(uri)}") from None
        if code == "PERMISSION_DENIED":
            raise SslflowError(
                f"MLflow server {uri}: cannot {action}: user '{user()}' is not an admin of the server"
            ) from None
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SslflowError(f"MLflow server {uri}: cannot {action}: {first}") from None


def refused_login(uri: str) -> str:
    """The one line for a 401: which user, and where the credentials come from."""
    who = f"user '{user()}'" if user() else "no user (MLFLOW_TRACKING_USERNAME is not set)"
    return (
        f"the server at {uri} refused {who}: wrong username or password "
        "(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)"
    )


def _auth_client(uri: str):
    import warnings

    with warnings.catch_warnings():  # its server app imports a deprecated Starlette module: noise to every user
        warnings.filterwarnings("ignore", message="starlette.middleware.wsgi is deprecated")
        from mlflow.server import get_app_client

        return get_app_client("basic-auth", tracking_uri=uri)


def add_user(uri: str, name: str, password: str) -> None:
    if len(password) < 12:
        raise SslflowError(f"the password for '{name}' has {len(password)} characters: use at least 12")
    with _errors(uri, f"create user '{name}'"):
        _auth_client(uri).create_user(name, password)


def _grant(auth, name: str, resource_type: str, resource_id: str, permission: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        auth.grant_user_permission(name, resource_type, resource_id, permission)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.revoke_user_permission(name, resource_type, resource_id)  # a changed role replaces the old grant
        auth.grant_user_permission(name, resource_type, resource_id, permission)


def grant(uri: str, name: str, role: str, experiment: str, models: list[str]) -> list[str]:
    """Give user `name` the `role` on `experiment` and the registered `models` (created if missing, the experiment
    with the server's proxied artifact store). Returns one line per grant."""
    if role not in ROLES:
        raise SslflowError(f"unknown role '{role}': choose one of {', '.join(ROLES)}")
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(uri)
    auth = _auth_client(uri)
    done = []
    with _errors(uri, f"grant '{name}' the {role} role"):
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        _grant(auth, name, "experiment", experiment_id, EXPERIMENT_PERMISSION)
        done.append(f"{name}: {EXPERIMENT_PERMISSION} on experiment '{experiment}'")
        for model in models:
            try:
                client.get_registered_model(model)
            except MlflowException as err:
                if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                client.create_registered_model(model)
            _grant(auth, name, "registered_model", model, ROLES[role])
            done.append(f"{name}: {ROLES[role]} on registered model '{model}'")
    return done


def model_permission(uri: str, model: str) -> str | None:
    """The current user's permission on the registered model `model` (READ, EDIT, MANAGE, …), as the server's
    auth app reports it; None where there is nothing to ask: not a server, no user, or no auth app."""
    if not is_server(uri) or user() is None:
        return None
    from mlflow.exceptions import MlflowException

    try:
        return _auth_client(uri).get_user_permission(user(), "registered_model", model).permission
    except MlflowException as err:
        if err.error_code == "UNAUTHENTICATED":
            raise SslflowError(refused_login(uri)) from None
        return None  # ENDPOINT_NOT_FOUND (a server without the auth app) and the like: MLflow decides per call
