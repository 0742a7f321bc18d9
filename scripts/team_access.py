"""Users and roles on the team server (scripts/team_server.sh), run by its admin:

    MLFLOW_TRACKING_URI=http://host:5000 MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=… \\
        python scripts/team_access.py add-user alice            # asks for alice's password (or SSLFLOW_NEW_PASSWORD)
    … python scripts/team_access.py grant alice maintainer      # or: contributor

A role covers the experiment `base.experiment` and the registered model of every track (`registry.model_names`):
see src/sslflow/tracking/team.py for what each role may do.
"""

import argparse
import getpass
import os
import typing

from sslflow import config
from sslflow.cli import run
from sslflow.errors import SslflowError
from sslflow.paths import Layout
from sslflow.tracking import tracking_uri
from sslflow.tracking.team import ROLES, add_user, grant, is_server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("add-user").add_argument("name")
    granted = sub.add_parser("grant")
    granted.add_argument("name")
    granted.add_argument("role", choices=list(ROLES))
    args = ap.parse_args()
    uri = tracking_uri()
    if not is_server(uri):
        raise SslflowError(f"MLFLOW_TRACKING_URI must be the team server (http://…), not {uri}")
    if args.command == "add-user":
        password = os.environ.get("SSLFLOW_NEW_PASSWORD") or getpass.getpass(f"password for {args.name}: ")
        add_user(uri, args.name, password)
        print(f"team: added user {args.name}")
        return
    layout = Layout()
    base = config.load(layout.params, "base", config.Base)
    registry = config.load(layout.params, "registry", config.Registry)
    models = [registry.model_name(track) for track in typing.get_args(config.Track)]
    for line in grant(uri, args.name, args.role, base.experiment, models):
        print(f"team: {line}")


if __name__ == "__main__":
    run(main)
