"""The MLflow model registry: evaluate registers its model as the `challenger`; promote reads the aliased
versions' evidence tags and moves `champion`. Any registry failure is one SslflowError naming the store.

The registry is the tracking store (`tracking_uri()`) unless `MLFLOW_REGISTRY_URI` says otherwise.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

from sslflow.errors import SslflowError
from sslflow.promotion import REASON, Candidate, Decision
from sslflow.tracking import tracking_uri

CHAMPION = "champion"
CHALLENGER = "challenger"


def _redacted(uri: str) -> str:
    """The URI without user:password@, fit for an error message."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


class ModelRegistry:
    """One registered model, `name`, in the registry of the project's tracking store."""

    def __init__(self, name: str, uri: str | None = None):
        self.name = name
        self.uri = uri or tracking_uri()
        with self._errors("open the registry"):
            import mlflow

            mlflow.set_tracking_uri(self.uri)  # mlflow.register_model uses the global client
            self._mlflow = mlflow
            self._client = mlflow.MlflowClient(tracking_uri=self.uri)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except SslflowError:
            raise
        except Exception as err:  # MlflowException, requests' connection errors, sqlite errors
            shown = _redacted(self.uri)
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0].replace(self.uri, shown)
            raise SslflowError(f"model registry at {shown}: cannot {action} of '{self.name}': {first_line}") from None

    def register_challenger(self, model_uri: str, tags: dict[str, str]) -> str:
        """A new version of the model from `model_uri`, tagged with `tags`, with the alias `challenger`."""
        with self._errors("register a version"):
            version = str(self._mlflow.register_model(model_uri, self.name, tags=tags).version)
            self._client.set_registered_model_alias(self.name, CHALLENGER, version)
        return version

    def candidate(self, alias: str) -> Candidate | None:
        """The version `alias` points to and its evidence, or None if no version has the alias."""
        from mlflow.exceptions import MlflowException

        with self._errors(f"read the alias '{alias}'"):
            try:
                aliases = self._client.get_registered_model(self.name).aliases  # {alias: version}
            except MlflowException as err:
                if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return None
                raise
            if alias not in aliases:
                return None
            version = self._client.get_model_version(self.name, aliases[alias])
        if version.status != "READY":
            raise SslflowError(f"version {version.version} of '{self.name}' ({alias}) is {version.status}, not READY")
        return Candidate.from_tags(version.version, version.tags)

    def settle(self, decision: Decision, challenger: Candidate) -> None:
        """Tag the challenger with the decision's reason; then, if promoted, move `champion` to it.

        The alias moves last, so a failure on the way leaves every alias as it was.
        """
        if not decision.record:
            return
        verdict = "promoted" if decision.promote else "kept out"
        with self._errors(f"record the decision on version {challenger.version}"):
            self._client.set_model_version_tag(self.name, challenger.version, REASON, f"{verdict}: {decision.reason}")
            if decision.promote:
                self._client.set_registered_model_alias(self.name, CHAMPION, challenger.version)
