"""The MLflow model registry: evaluate registers its model as the `challenger`; promote reads the versions'
evidence tags and moves `champion`. Any registry failure is one SslflowError naming the store.

The registry is the tracking store (`tracking_uri()`) unless `MLFLOW_REGISTRY_URI` says otherwise. On a team server
(tracking/team.py) MLflow checks each write: a user without EDIT on the registered model gets `Refused`, one line
that names the user and the permission, before any alias moves.

Every version evaluate registers gets exactly one recorded decision (tag `sslflow.promotion`). Decisions are made
one at a time under a lock (`deciding`), so that two promotes (`dvc queue start -j 2`) do not race; each promote
first finishes what a killed one left half done (`recover`), then decides every version still undecided, oldest
first, each against the champion of its moment: the champion ends as the best version that passed the gate.
"""

import hashlib
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from sslflow.errors import SslflowError
from sslflow.lock import exclusive
from sslflow.promotion import PENDING, REASON, RUN_ID, Candidate, Decision, decide, recorded, verdict
from sslflow.tracking import tracking_uri
from sslflow.tracking.team import MAY_WRITE_REGISTRY, model_permission, refused_login, user

CHAMPION = "champion"
CHALLENGER = "challenger"
LOCK_WAIT_S = 600  # how long a promote waits for another one's decisions before it gives up


class Refused(SslflowError):
    """The server refused this user a registry write (HTTP 403), or refused the user (401)."""


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
            code = getattr(err, "error_code", "")
            if code == "PERMISSION_DENIED":
                raise Refused(self.refusal(action, model_permission(self.uri, self.name))) from None
            if code == "UNAUTHENTICATED":
                raise Refused(f"model registry: cannot {action} of '{self.name}': {refused_login(shown)}") from None
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0].replace(self.uri, shown)
            raise SslflowError(f"model registry at {shown}: cannot {action} of '{self.name}': {first_line}") from None

    def refusal(self, action: str, permission: str | None) -> str:
        has = f"has {permission}" if permission else "lacks the permission"
        return (
            f"model registry at {_redacted(self.uri)}: user '{user()}' {has} on registered model '{self.name}', and "
            f"to {action} needs EDIT (maintainers have MANAGE): the server refused it; aliases unchanged"
        )

    def require_write(self, action: str) -> None:
        """Refused, before any write, if the server's auth app says this user may not write to the model."""
        permission = model_permission(self.uri, self.name)
        if permission is not None and permission not in MAY_WRITE_REGISTRY:
            raise Refused(self.refusal(action, permission))

    def register_challenger(self, model_uri: str, tags: dict[str, str]) -> str:
        """A new version of the model from `model_uri`, tagged with `tags`, with the alias `challenger`."""
        with self._errors("register a version"):
            version = str(self._mlflow.register_model(model_uri, self.name, tags=tags).version)
            self._client.set_registered_model_alias(self.name, CHALLENGER, version)
        return version

    @contextmanager
    def deciding(self, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
        """Hold the machine-wide lock on this model's decisions (one flock per registry URI and model name, in
        the temp directory: every workspace and DVC queue worker on this machine shares it)."""
        key = hashlib.sha256(f"{self.uri}\0{self.name}".encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"sslflow-registry-{key}.lock"
        with exclusive(path, f"promote of '{self.name}'", wait_s):
            yield

    def _versions(self) -> list:
        """Every version of the model, oldest first ([] if the model does not exist)."""
        from mlflow.exceptions import MlflowException

        with self._errors("list the versions"):
            try:
                found = self._client.search_model_versions(f"name = '{self.name}'")
            except MlflowException as err:
                if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return []
                raise
        return sorted(found, key=lambda v: int(v.version))

    def _aliases(self) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        with self._errors("read the aliases"):
            try:
                return {a: str(v) for a, v in self._client.get_registered_model(self.name).aliases.items()}
            except MlflowException as err:
                if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return {}
                raise

    def evaluated_by(self, run_id: str) -> Candidate | None:
        """The version the evaluate run `run_id` registered (tag sslflow.run_id), or None."""
        for version in reversed(self._versions()):
            if version.tags.get(RUN_ID) == run_id:
                return Candidate.from_tags(version.version, version.tags)
        return None

    def recover(self) -> list[str]:
        """Finish the decisions a killed promote left half done (tag PENDING): the version that holds `champion`
        gets the decision it was promoted with; on any other version the intent is dropped (the alias never
        moved), and the version is decided again. Returns one line per version touched. Hold `deciding`."""
        notes = []
        champion = self._aliases().get(CHAMPION)
        for version in self._versions():
            pending = version.tags.get(PENDING)
            if pending is None:
                continue
            with self._errors(f"recover the decision on version {version.version}"):
                if str(version.version) == champion:
                    self._client.set_model_version_tag(self.name, version.version, REASON, pending)
                    notes.append(f"version {version.version}: finished the interrupted decision ({pending[:60]}…)")
                elif version.tags.get(REASON) is None:
                    notes.append(f"version {version.version}: rolled back an interrupted decision; deciding it again")
                self._client.delete_model_version_tag(self.name, version.version, PENDING)
        return notes

    def undecided(self) -> list[tuple[str, dict[str, str]]]:
        """(version, tags) of the versions evaluate registered (they carry sslflow.run_id) that have no recorded
        decision yet, oldest first."""
        return [
            (str(v.version), dict(v.tags))
            for v in self._versions()
            if v.tags.get(RUN_ID) and REASON not in v.tags and v.status == "READY"
        ]

    def run_status(self, run_id: str) -> str | None:
        """The MLflow status of the run (FINISHED, FAILED, KILLED, RUNNING), or None if this store lacks it."""
        try:
            return self._client.get_run(run_id).info.status
        except Exception:  # a run in another store, or deleted: nothing to say about it
            return None

    def recorded_decision(self, candidate: Candidate) -> Decision | None:
        """The decision already recorded on `candidate`'s version, or None."""
        with self._errors(f"read version {candidate.version}"):
            tags = self._client.get_model_version(self.name, candidate.version).tags
        if REASON not in tags:
            return None
        return recorded(tags[REASON], is_champion=self._aliases().get(CHAMPION) == candidate.version)

    def record_kept_out(self, version: str, reason: str) -> None:
        """Record `kept out` on a version that cannot be weighed (unreadable evidence, failed evaluate run)."""
        self.settle(Decision(False, reason), Candidate(version, 0.0, 0.0, "", "", ""))

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
        """Record the decision on the challenger's version and, if promoted, move `champion` to it.

        In three writes, each of which a kill may interrupt: the intent (tag PENDING), the alias, the decision
        (tag REASON, then PENDING removed). A version thus never reads "promoted" without holding `champion`
        first, and `recover` completes or drops an intent that a kill left behind.
        """
        if not decision.record:
            return
        text = verdict(decision)
        with self._errors(f"record the decision on version {challenger.version}"):
            self._client.set_model_version_tag(self.name, challenger.version, PENDING, text)
            if decision.promote:
                self._client.set_registered_model_alias(self.name, CHAMPION, challenger.version)
            self._client.set_model_version_tag(self.name, challenger.version, REASON, text)
            self._client.delete_model_version_tag(self.name, challenger.version, PENDING)


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def decide_all(registry: ModelRegistry, own: Candidate, *, min_delta: float, min_class_recall: float):
    """Decide `own` (the version this workspace's evaluate registered) and every other version still undecided,
    oldest first, each against the champion of its moment; first finish what a killed promote left half done.
    Returns (own's decision, the champion it was weighed against). Call under `registry.deciding()`."""
    for line in registry.recover():
        note(line)
    outcome = None
    for version, tags in registry.undecided():
        try:
            candidate = Candidate.from_tags(version, tags)
        except SslflowError as err:  # its evidence is unreadable: it can never be weighed
            registry.record_kept_out(version, f"not promoted: {err}")
            note(f"version {version} kept out: {err}")
            continue
        champion = registry.candidate(CHAMPION)
        status = registry.run_status(candidate.run_id)
        if status in ("FAILED", "KILLED"):  # the evaluate that registered it did not finish: DVC kept no result
            ended = f"its evaluate run {candidate.run_id} ended {status}"
            decision = Decision(False, f"not promoted: {ended}; rerun evaluate")
        else:
            decision = decide(candidate, champion, min_delta=min_delta, min_class_recall=min_class_recall)
        registry.settle(decision, candidate)
        if version == own.version:
            outcome = (decision, champion)
        else:
            note(f"decided version {version}, which another promote had left undecided: {verdict(decision)}")
    if outcome is None:  # decided before: by an earlier run of promote, or by another workspace's
        champion = registry.candidate(CHAMPION)
        if champion is not None and champion.version == own.version:
            outcome = (decide(own, champion, min_delta=min_delta, min_class_recall=min_class_recall), champion)
        else:
            decision = registry.recorded_decision(own)
            if decision is None:  # not READY, or no sslflow.run_id tag: weigh it now, as before
                decision = decide(own, champion, min_delta=min_delta, min_class_recall=min_class_recall)
                registry.settle(decision, own)
            outcome = (decision, champion)
    return outcome
