"""An Iceberg REST catalog for the tests, on 127.0.0.1: the routes lake and pyiceberg's
RestCatalog call, over tables kept in memory. The semantics are pyiceberg's own: its request
and response models, `TableRequirement.validate` (a failed requirement is 409) and
`update_table_metadata`, and its metadata file writer; this file only carries them over HTTP.

OAuth2 client credentials: POST /v1/oauth/tokens with the client id and secret of the
REST_CREDENTIAL environment variable (`id:secret`) gives a token; every other route answers
401 without it. Routes are under the prefix `/v1/test/` (as /v1/config says).

POST /_test/conflicts?n=N makes the next N commits answer 409 (a lost race), as a catalog
does when another writer committed first.

Prints the port it listens on, then serves until killed.
"""

import json
import os
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

from pyiceberg.catalog.rest import CreateTableRequest
from pyiceberg.io import load_file_io
from pyiceberg.partitioning import UNPARTITIONED_PARTITION_SPEC
from pyiceberg.serializers import ToOutputFile
from pyiceberg.table import CommitTableRequest
from pyiceberg.table.metadata import new_table_metadata
from pyiceberg.table.sorting import UNSORTED_SORT_ORDER
from pyiceberg.table.update import update_table_metadata
from pyiceberg.exceptions import CommitFailedException

PREFIX = "test"
CLIENT_ID, _, CLIENT_SECRET = os.environ.get("REST_CREDENTIAL", "lake:secret").partition(":")
TOKEN = f"token-{uuid.uuid4()}"
LOCK = threading.Lock()
NAMESPACES = {}
TABLES = {}  # (namespace, name) -> (metadata_location, metadata)
STATE = {"conflicts": 0, "commits": 0, "refused": 0}


def write_metadata(metadata, version):
    location = f"{metadata.location}/metadata/{version:05d}-{uuid.uuid4()}.metadata.json"
    ToOutputFile.table_metadata(metadata, load_file_io({}, location).new_output(location))
    return location


def table_result(location, metadata):
    return {"metadata-location": location, "metadata": json.loads(metadata.model_dump_json()),
            "config": {}}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, code, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, code, kind, message):
        self.answer(code, {"error": {"message": message, "type": kind, "code": code}})

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def route(self):
        url = urlparse(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        return url, parts

    def authorized(self):
        if self.headers.get("Authorization") == f"Bearer {TOKEN}":
            return True
        self.error(401, "NotAuthorizedException", "no valid token")
        return False

    def do_GET(self):
        url, parts = self.route()
        if parts == ["v1", "config"]:
            if not self.authorized():
                return
            return self.answer(200, {"defaults": {}, "overrides": {"prefix": PREFIX}})
        if parts == ["_test", "state"]:
            return self.answer(200, STATE)
        if not self.authorized():
            return
        if parts[:3] != ["v1", PREFIX, "namespaces"]:
            return self.error(404, "NoSuchPathException", self.path)
        rest = parts[3:]
        with LOCK:
            if rest == []:
                return self.answer(200, {"namespaces": [[n] for n in NAMESPACES]})
            if len(rest) == 1:
                if rest[0] not in NAMESPACES:
                    return self.error(404, "NoSuchNamespaceException", rest[0])
                return self.answer(200, {"namespace": [rest[0]], "properties": {}})
            if len(rest) == 3 and rest[1] == "tables":
                key = (rest[0], rest[2])
                if key not in TABLES:
                    return self.error(404, "NoSuchTableException", ".".join(key))
                return self.answer(200, table_result(*TABLES[key]))
        return self.error(404, "NoSuchPathException", self.path)

    def do_HEAD(self):
        _, parts = self.route()
        rest = parts[3:]
        with LOCK:
            found = (len(rest) == 1 and rest[0] in NAMESPACES) or (
                len(rest) == 3 and (rest[0], rest[2]) in TABLES)
        self.send_response(204 if found else 404)
        self.end_headers()

    def do_POST(self):
        try:
            self.post()
        except Exception as e:  # a bug here is a 500 the client reports, not a hang-up
            self.error(500, type(e).__name__, str(e))

    def post(self):
        url, parts = self.route()
        raw = self.body()
        if parts == ["v1", "oauth", "tokens"]:
            form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            if form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET:
                return self.answer(200, {"access_token": TOKEN, "token_type": "bearer",
                                         "expires_in": 3600, "issued_token_type":
                                         "urn:ietf:params:oauth:token-type:access_token"})
            return self.answer(401, {"error": "invalid_client"})
        if parts == ["_test", "conflicts"]:
            STATE["conflicts"] = int(parse_qs(url.query)["n"][0])
            return self.answer(200, STATE)
        if not self.authorized():
            return
        if parts[:3] != ["v1", PREFIX, "namespaces"]:
            return self.error(404, "NoSuchPathException", self.path)
        rest = parts[3:]
        body = json.loads(raw or b"{}")
        with LOCK:
            if rest == []:
                name = body["namespace"][0]
                if name in NAMESPACES:
                    return self.error(409, "AlreadyExistsException", name)
                NAMESPACES[name] = body.get("properties", {})
                return self.answer(200, {"namespace": [name], "properties": NAMESPACES[name]})
            if len(rest) == 2 and rest[1] == "tables":
                if rest[0] not in NAMESPACES:
                    return self.error(404, "NoSuchNamespaceException", rest[0])
                req = CreateTableRequest.model_validate(body)
                key = (rest[0], req.name)
                if key in TABLES:
                    return self.error(409, "AlreadyExistsException", ".".join(key))
                metadata = new_table_metadata(
                    schema=req.table_schema, location=req.location,
                    partition_spec=req.partition_spec or UNPARTITIONED_PARTITION_SPEC,
                    sort_order=req.write_order or UNSORTED_SORT_ORDER,
                    properties=req.properties)
                TABLES[key] = (write_metadata(metadata, 0), metadata)
                return self.answer(200, table_result(*TABLES[key]))
            if len(rest) == 3 and rest[1] == "tables":
                key = (rest[0], rest[2])
                if key not in TABLES:
                    return self.error(404, "NoSuchTableException", ".".join(key))
                if STATE["conflicts"] > 0:
                    STATE["conflicts"] -= 1
                    STATE["refused"] += 1
                    return self.error(409, "CommitFailedException", "a lost race (test)")
                req = CommitTableRequest.model_validate(body)
                location, base = TABLES[key]
                try:
                    for r in req.requirements:
                        r.validate(base)
                except CommitFailedException as e:
                    STATE["refused"] += 1
                    return self.error(409, "CommitFailedException", str(e))
                metadata = update_table_metadata(base, req.updates, metadata_location=location)
                version = int(location.rsplit("/", 1)[1].split("-", 1)[0]) + 1
                TABLES[key] = (write_metadata(metadata, version), metadata)
                STATE["commits"] += 1
                return self.answer(200, table_result(*TABLES[key]))
        return self.error(404, "NoSuchPathException", self.path)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
