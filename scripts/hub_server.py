#!/usr/bin/env python3
"""A stand-in for the Hugging Face Hub on loopback, for scripts/hub_checks.sh: serves the model
folders under --root (ROOT/ORG/NAME/FILE) in the Hub's URL layout, as huggingface_hub expects it.

  GET  /api/models/ORG/NAME/revision/REV   {"id", "sha", "siblings": [{"rfilename"}]}
  GET  /api/models/ORG/NAME/tree/REV       [{"type", "path", "size", "oid", "lfs"}] (huggingface_hub's listing)
  HEAD /ORG/NAME/resolve/REV/FILE          small files: 200 with ETag (git blob SHA-1), Content-Length;
  GET  /ORG/NAME/resolve/REV/FILE          LFS files (*.safetensors, *.gguf): 302 to http://localhost:PORT/cdn/... with
                                            X-Linked-Etag (SHA-256) and X-Linked-Size, as the Hub does
  GET  /cdn/ORG/NAME/FILE                  the bytes, honouring Range: bytes=N-
Every resolve answer carries X-Repo-Commit. REV is "main" or the commit (a hash of the files).

Faults, for the checks: --cut FILE:N closes the connection after N bytes of FILE, once;
--corrupt FILE serves FILE with its bytes changed but the real SHA-256 as its ETag;
--token T answers 401 unless "Authorization: Bearer T" comes with a request; --ignore-range
answers Range requests with the whole file.
Each request is logged to --log as "METHOD PATH range=RANGE auth=yes|no". Standard library only.
"""
import argparse
import hashlib
import json
import os
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".gguf")


def repo_files(root, repo):
    folder = os.path.join(root, repo)
    if repo.count("/") != 1 or ".." in repo or not os.path.isdir(folder):
        return None
    return {name: os.path.join(folder, name) for name in sorted(os.listdir(folder)) if os.path.isfile(os.path.join(folder, name))}


def file_etag(path):
    data = open(path, "rb").read()
    if path.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id


def commit_of(files):
    h = hashlib.sha1()
    for name, path in files.items():
        h.update(name.encode() + b"\0" + file_etag(path).encode() + b"\n")
    return h.hexdigest()


class Hub(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass

    def log_request_line(self):
        auth = "yes" if self.headers.get("Authorization") else "no"
        with open(self.server.opts.log, "a") as log:
            log.write(f"{self.command} {self.path} range={self.headers.get('Range', '-')} auth={auth}\n")

    def send(self, status, headers=(), body=b""):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if not any(n == "Content-Length" for n, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def not_found(self, code):
        self.send(404, [("X-Error-Code", code), ("Content-Type", "application/json")], json.dumps({"error": code}).encode())

    def authorized(self):
        token = self.server.opts.token
        if token and self.headers.get("Authorization") != f"Bearer {token}":
            self.send(401, [("Content-Type", "application/json")], b'{"error": "Invalid credentials"}')
            return False
        return True

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self.log_request_line()
        path = unquote(urlsplit(self.path).path)
        opts = self.server.opts
        if path.startswith("/api/models/") and "/tree/" in path:
            # The listing huggingface_hub's snapshot_download asks for (not lora), so that it too can use this server.
            repo, _, rev = path[len("/api/models/"):].partition("/tree/")
            files = repo_files(opts.root, repo)
            if not self.authorized():
                return
            if files is None or rev not in ("main", commit_of(files)):
                return self.not_found("RepoNotFound" if files is None else "RevisionNotFound")
            entries = []
            for name, file in files.items():
                entry = {"type": "file", "path": name, "size": os.path.getsize(file), "oid": file_etag(file)}
                if name.endswith(LFS_SUFFIXES):
                    entry["lfs"] = {"oid": file_etag(file), "size": os.path.getsize(file), "pointerSize": 134}
                entries.append(entry)
            return self.send(200, [("Content-Type", "application/json")], json.dumps(entries).encode())
        if path.startswith("/api/models/"):
            repo, sep, rev = path[len("/api/models/"):].partition("/revision/")
            files = repo_files(opts.root, repo)
            if not self.authorized():
                return
            if not sep or files is None:
                return self.not_found("RepoNotFound")
            commit = commit_of(files)
            if rev not in ("main", commit):
                return self.not_found("RevisionNotFound")
            body = {"id": repo, "sha": commit, "siblings": [{"rfilename": name} for name in files]}
            return self.send(200, [("Content-Type", "application/json")], json.dumps(body).encode())
        if path.startswith("/cdn/"):
            repo, _, name = path[len("/cdn/"):].rpartition("/")
            files = repo_files(opts.root, repo) or {}
            if name not in files:
                return self.not_found("EntryNotFound")
            return self.serve_bytes(name, files[name])
        parts = path.lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self.not_found("EntryNotFound")
        repo, rev, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        files = repo_files(opts.root, repo)
        if not self.authorized():
            return
        if files is None:
            return self.not_found("RepoNotFound")
        commit = commit_of(files)
        if rev not in ("main", commit):
            return self.not_found("RevisionNotFound")
        if name not in files:
            return self.not_found("EntryNotFound")
        etag, size = file_etag(files[name]), os.path.getsize(files[name])
        if name.endswith(LFS_SUFFIXES):
            # Another host name, as the Hub's CDN is: a HEAD must not follow it, or the X-Linked headers are lost.
            cdn = f"http://localhost:{self.server.server_address[1]}/cdn/{repo}/{name}"
            return self.send(302, [("Location", cdn), ("X-Repo-Commit", commit), ("ETag", f'"{etag}"'),
                                   ("X-Linked-Etag", f'"{etag}"'), ("X-Linked-Size", str(size))])
        self.serve_bytes(name, files[name], [("X-Repo-Commit", commit), ("ETag", f'"{etag}"')])

    def serve_bytes(self, name, path, headers=()):
        data = open(path, "rb").read()
        opts = self.server.opts
        if name == opts.corrupt:
            data = bytes(b ^ 0xFF for b in data)
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and not opts.ignore_range and rng.endswith("-") and rng[6:-1].isdigit():
            start, status = int(rng[6:-1]), 206
            if start >= len(data):
                return self.send(416, [("Content-Range", f"bytes */{len(data)}")])
        body = data[start:]
        self.send_response(status)
        for header, value in headers:
            self.send_header(header, value)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        cut_name, _, cut_at = (opts.cut or "").partition(":")
        if name == cut_name and not self.server.cut_done:
            self.server.cut_done = True
            self.wfile.write(body[: int(cut_at)])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # the connection drops mid-file
            self.close_connection = True
            return
        self.wfile.write(body)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", required=True)
    p.add_argument("--port-file", required=True, help="where the chosen port is written once the server listens")
    p.add_argument("--log", default=os.devnull)
    p.add_argument("--cut")
    p.add_argument("--corrupt")
    p.add_argument("--token")
    p.add_argument("--ignore-range", action="store_true", help="answer every request with the whole file (200), as some servers do")
    opts = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    server.opts, server.cut_done = opts, False
    with open(opts.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(opts.port_file + ".tmp", opts.port_file)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
