#!/usr/bin/env python3
"""Writes a docker-archive image (one layer) without a container engine.

No registry is reachable here, so every image the test bed runs is built
from binaries built here and imported into containerd under the exact
reference the pod specs use. The archive is deterministic: same inputs,
same bytes, same image ID.

usage: build-image.py --ref REF --out FILE [--file SRC:DEST[:MODE]]...
                      [--dir DEST[:MODE]]... [--tree ROOTFS_DIR] [--entrypoint JSON] [--cmd JSON]
                      [--user USER] [--env K=V]... [--workdir DIR]
"""
import argparse
import hashlib
import io
import json
import os
import tarfile


def add_dirs(tar, path, seen):
    parts = path.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d and d not in seen:
            seen.add(d)
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)


def add_tree(tar, root, seen):
    """Adds every entry under root, sorted, with fixed owners and times."""
    entries = []
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            entries.append(os.path.join(base, name))
    for path in sorted(entries):
        name = os.path.relpath(path, root)
        info = tar.gettarinfo(path, arcname=name)
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        seen.add(name)
        if info.isreg():
            with open(path, "rb") as f:
                tar.addfile(info, f)
        else:
            tar.addfile(info)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ref", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--file", action="append", default=[])
    p.add_argument("--dir", action="append", default=[])
    p.add_argument("--tree", help="a staged root file system, added as it is (symlinks kept)")
    p.add_argument("--entrypoint")
    p.add_argument("--cmd")
    p.add_argument("--user")
    p.add_argument("--workdir")
    p.add_argument("--env", action="append", default=[])
    a = p.parse_args()

    layer = io.BytesIO()
    seen = set()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if a.tree:
            add_tree(tar, a.tree, seen)
        for spec in a.dir:
            dest, _, mode = spec.partition(":")
            add_dirs(tar, dest + "/x", seen)
            name = dest.strip("/")
            if name not in seen:
                seen.add(name)
                info = tarfile.TarInfo(name)
                info.type = tarfile.DIRTYPE
                info.mode = int(mode, 8) if mode else 0o755
                tar.addfile(info)
        for spec in sorted(a.file):
            src, dest, *rest = spec.split(":")
            add_dirs(tar, dest, seen)
            with open(src, "rb") as f:
                data = f.read()
            info = tarfile.TarInfo(dest.strip("/"))
            info.size = len(data)
            info.mode = int(rest[0], 8) if rest else (0o755 if os.access(src, os.X_OK) else 0o644)
            tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = hashlib.sha256(layer_bytes).hexdigest()

    config = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + a.env}
    if a.entrypoint:
        config["Entrypoint"] = json.loads(a.entrypoint)
    if a.cmd:
        config["Cmd"] = json.loads(a.cmd)
    if a.user:
        config["User"] = a.user
    if a.workdir:
        config["WorkingDir"] = a.workdir
    image = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "nestor e2e/testbed/build-image.py"}],
    }
    config_bytes = json.dumps(image, sort_keys=True, separators=(",", ":")).encode()
    config_id = hashlib.sha256(config_bytes).hexdigest()
    manifest = [{"Config": config_id + ".json", "RepoTags": [a.ref], "Layers": [diff_id + "/layer.tar"]}]

    tmp = a.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as out:
        for name, data in [
            (diff_id + "/layer.tar", layer_bytes),
            (config_id + ".json", config_bytes),
            ("manifest.json", json.dumps(manifest).encode()),
        ]:
            if "/" in name:
                d = tarfile.TarInfo(name.split("/")[0])
                d.type = tarfile.DIRTYPE
                d.mode = 0o755
                out.addfile(d)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            out.addfile(info, io.BytesIO(data))
    os.replace(tmp, a.out)
    print("sha256:" + config_id)


if __name__ == "__main__":
    main()
