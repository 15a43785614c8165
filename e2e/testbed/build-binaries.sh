#!/usr/bin/env bash
# Builds the upstream Kubernetes and etcd binaries the test bed runs, from
# their Go modules, into a cache keyed by version. A second run with the same
# versions does nothing. Usage: build-binaries.sh [component ...]
# BUILD_K8S_VERSION builds the Kubernetes components of another version
# (the upgrade tests' K8S_PREVIOUS_VERSION) into that version's cache.
# Components: kube-apiserver kube-controller-manager kube-scheduler kubelet
#             kube-proxy etcd etcdctl etcdutl coredns pause crane konnectivity
#             agnhost metrics-server kube-router flannel versitygw conformance (default: the
#             control-plane set and etcd).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
K8S_VERSION=${BUILD_K8S_VERSION:-$K8S_VERSION}

cache=${NESTOR_CACHE:-$HOME/.cache/nestor}
k8s_bin=$cache/kubernetes/$K8S_VERSION/bin
etcd_bin=$cache/etcd/$ETCD_VERSION/bin
coredns_bin=$cache/coredns/$COREDNS_VERSION/bin
pause_bin=$cache/pause/$PAUSE_TAG/bin
crane_bin=$cache/crane/$CRANE_VERSION/bin
knp_bin=$cache/konnectivity/$KONNECTIVITY_VERSION/bin
ms_bin=$cache/metrics-server/$METRICS_SERVER_VERSION/bin
kr_bin=$cache/kube-router/$KUBE_ROUTER_VERSION/bin
flannel_bin=$cache/flannel/$FLANNEL_VERSION/bin
vgw_bin=$cache/versitygw/$VERSITYGW_VERSION/bin
mkdir -p "$k8s_bin" "$etcd_bin" "$coredns_bin" "$pause_bin" "$crane_bin" "$knp_bin" "$ms_bin" "$kr_bin" \
  "$flannel_bin" "$vgw_bin"

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(kube-apiserver kube-controller-manager kube-scheduler etcd)

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

k8s_wrapper() {
  # k8s.io/kubernetes is not importable as-is: its go.mod replaces every
  # staging module with a local path. A wrapper module pins each of them to
  # the published v0.X.Y of the same release instead.
  local dir=$cache/kubernetes/$K8S_VERSION/module
  if [ ! -f "$dir/go.sum" ]; then
    mkdir -p "$dir"
    local staging=v0.${K8S_VERSION#1.}
    local modfile
    modfile=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
    {
      echo "module nestor.dev/testbed/kubernetes"
      echo
      echo "go 1.25"
      echo
      echo "require k8s.io/kubernetes v$K8S_VERSION"
      echo
      echo "replace ("
      sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/k8s.io/.*#\t\1 => \1 '"$staging"'#p' "$modfile"
      echo ")"
    } > "$dir/go.mod"
    cat > "$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
    echo "nestor-testbed: resolving Kubernetes v$K8S_VERSION modules (first run only)" >&2
    (cd "$dir" && go mod tidy -e >&2)
  fi
  echo "$dir"
}

k8s_test_wrapper() {
  # Upstream's test programs (agnhost, sample-apiserver, the end-to-end
  # suite and ginkgo) need more modules than the components: a module of
  # their own, pinned like the wrapper above, tidied again whenever the
  # list of programs changes.
  local dir=$cache/kubernetes/$K8S_VERSION/test-module base tools
  tools=$(cat <<'GO'
//go:build tools

package tools

import (
	_ "github.com/onsi/ginkgo/v2/ginkgo"
	_ "go.yaml.in/yaml/v2"
	_ "k8s.io/kubernetes/test/conformance/testdata"
	_ "k8s.io/kubernetes/test/e2e"
	_ "k8s.io/kubernetes/test/e2e/apimachinery"
	_ "k8s.io/kubernetes/test/e2e/apps"
	_ "k8s.io/kubernetes/test/e2e/architecture"
	_ "k8s.io/kubernetes/test/e2e/auth"
	_ "k8s.io/kubernetes/test/e2e/autoscaling"
	_ "k8s.io/kubernetes/test/e2e/cloud"
	_ "k8s.io/kubernetes/test/e2e/common"
	_ "k8s.io/kubernetes/test/e2e/dra"
	_ "k8s.io/kubernetes/test/e2e/framework/debug/init"
	_ "k8s.io/kubernetes/test/e2e/framework/metrics/init"
	_ "k8s.io/kubernetes/test/e2e/framework/node/init"
	_ "k8s.io/kubernetes/test/e2e/instrumentation"
	_ "k8s.io/kubernetes/test/e2e/invariants"
	_ "k8s.io/kubernetes/test/e2e/kubectl"
	_ "k8s.io/kubernetes/test/e2e/lifecycle"
	_ "k8s.io/kubernetes/test/e2e/lifecycle/bootstrap"
	_ "k8s.io/kubernetes/test/e2e/network"
	_ "k8s.io/kubernetes/test/e2e/node"
	_ "k8s.io/kubernetes/test/e2e/scheduling"
	_ "k8s.io/kubernetes/test/e2e/storage"
	_ "k8s.io/kubernetes/test/e2e/storage/csimock"
	_ "k8s.io/kubernetes/test/e2e/storage/external"
	_ "k8s.io/kubernetes/test/e2e/windows"
	_ "k8s.io/kubernetes/test/fixtures"
	_ "k8s.io/kubernetes/test/images/agnhost"
	_ "k8s.io/kubernetes/test/utils/format"
	_ "k8s.io/sample-apiserver"
)
GO
)
  if [ ! -f "$dir/go.sum" ] || [ "$(cat "$dir/tools.go" 2>/dev/null)" != "$tools" ]; then
    base=$(k8s_wrapper)
    mkdir -p "$dir"
    sed 's#^module .*#module nestor.dev/testbed/kubernetes-tests#' "$base/go.mod" > "$dir/go.mod"
    cp "$base/go.sum" "$dir/go.sum.tmp"
    echo "$tools" > "$dir/tools.go"
    echo "nestor-testbed: resolving Kubernetes v$K8S_VERSION test modules (first run only)" >&2
    (cd "$dir" && mv go.sum.tmp go.sum && go mod tidy -e >&2)
  fi
  echo "$dir"
}

etcd_module() { # etcd_module NAME MODULE < main.go: a wrapper module for one of etcd's commands
  # etcd's command modules replace their sibling modules with local paths,
  # so they are not installable as-is: a wrapper module pins the published
  # ones and runs the command's own entry point (main.go, on stdin).
  local name=$1 module=$2
  local dir=$cache/etcd/$ETCD_VERSION/$name-module
  if [ ! -f "$dir/go.sum" ]; then
    mkdir -p "$dir"
    printf 'module nestor.dev/testbed/%s\n\ngo 1.25\n\nrequire %s v%s\n' "$name" "$module" "$ETCD_VERSION" > "$dir/go.mod"
    cat > "$dir/main.go"
    echo "nestor-testbed: resolving $name v$ETCD_VERSION modules (first run only)" >&2
    (cd "$dir" && go mod tidy >&2)
  fi
  echo "$dir"
}

etcd_wrapper() {
  etcd_module etcd go.etcd.io/etcd/server/v3 <<'GO'
// Command etcd runs upstream etcd's own entry point, unchanged.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
}

etcdctl_wrapper() {
  etcd_module etcdctl go.etcd.io/etcd/etcdctl/v3 <<'GO'
// Command etcdctl runs upstream etcdctl's own entry point, unchanged.
package main

import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

func main() { ctlv3.MustStart() }
GO
}

go_install() { # go_install NAME MODULE@VERSION BIN_DIR: a command of a published module
  local name=$1 module=$2 bin=$3 start=$SECONDS
  echo "nestor-testbed: building $name ${module##*@}" >&2
  GOBIN=$bin.tmp go install -trimpath -ldflags='-s -w' "$module"
  mv "$bin.tmp/$name" "$bin/$name"
  rmdir "$bin.tmp"
  echo "nestor-testbed: built $name in $((SECONDS - start))s" >&2
}

for c in "${components[@]}"; do
  case "$c" in
    etcd | etcdctl)
      # Upstream's etcd image carries etcdctl; Nestor's snapshots use it.
      [ -x "$etcd_bin/$c" ] && continue
      dir=$("${c}_wrapper")
      echo "nestor-testbed: building $c v$ETCD_VERSION" >&2
      start=$SECONDS
      (cd "$dir" && go build -trimpath -ldflags='-s -w' -o "$etcd_bin/$c.tmp" .)
      mv "$etcd_bin/$c.tmp" "$etcd_bin/$c"
      echo "nestor-testbed: built $c in $((SECONDS - start))s" >&2
      ;;
    coredns)
      [ -x "$coredns_bin/coredns" ] && continue
      go_install coredns "github.com/coredns/coredns@v$COREDNS_VERSION" "$coredns_bin"
      ;;
    konnectivity)
      # proxy-server and proxy-agent. The module replaces its client module
      # with a local path, so a wrapper module pins the published one.
      [ -x "$knp_bin/proxy-server" ] && [ -x "$knp_bin/proxy-agent" ] && continue
      dir=$cache/konnectivity/$KONNECTIVITY_VERSION/module
      if [ ! -f "$dir/go.sum" ]; then
        mkdir -p "$dir"
        cat > "$dir/go.mod" <<GO
module nestor.dev/testbed/konnectivity

go 1.25

require (
	sigs.k8s.io/apiserver-network-proxy v$KONNECTIVITY_VERSION
	sigs.k8s.io/apiserver-network-proxy/konnectivity-client v$KONNECTIVITY_VERSION
)
GO
        cat > "$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "sigs.k8s.io/apiserver-network-proxy/cmd/agent"
	_ "sigs.k8s.io/apiserver-network-proxy/cmd/server"
)
GO
        (cd "$dir" && go mod tidy >&2)
      fi
      for b in server agent; do
        echo "nestor-testbed: building proxy-$b v$KONNECTIVITY_VERSION" >&2
        (cd "$dir" && go build -trimpath -ldflags='-s -w' -o "$knp_bin/proxy-$b.tmp" "sigs.k8s.io/apiserver-network-proxy/cmd/$b")
        mv "$knp_bin/proxy-$b.tmp" "$knp_bin/proxy-$b"
      done
      ;;
    agnhost)
      [ -x "$k8s_bin/agnhost" ] && [ -f "$k8s_bin/agnhost.version" ] && continue
      dir=$(k8s_test_wrapper)
      echo "nestor-testbed: building agnhost (Kubernetes v$K8S_VERSION)" >&2
      (cd "$dir" && go build -trimpath -ldflags='-s -w' -o "$k8s_bin/agnhost.tmp" k8s.io/kubernetes/test/images/agnhost)
      # The image tag upstream's tests ask for.
      (cd "$dir" && cat "$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)/test/images/agnhost/VERSION") > "$k8s_bin/agnhost.version"
      mv "$k8s_bin/agnhost.tmp" "$k8s_bin/agnhost"
      ;;
    conformance)
      # Upstream's Conformance suite (e2e.test), the ginkgo runner, and the
      # programs of the test images that are not agnhost: sample-apiserver,
      # nonewprivs' nnp, and the etcd the aggregator test runs beside it.
      dir=$(k8s_test_wrapper)
      if [ ! -x "$k8s_bin/e2e.test" ]; then
        echo "nestor-testbed: building e2e.test v$K8S_VERSION (several minutes on 2 cores)" >&2
        (cd "$dir" && go test -c -trimpath -ldflags='-s -w' -o "$k8s_bin/e2e.test.tmp" k8s.io/kubernetes/test/e2e)
        mv "$k8s_bin/e2e.test.tmp" "$k8s_bin/e2e.test"
      fi
      for prog in ginkgo:github.com/onsi/ginkgo/v2/ginkgo sample-apiserver:k8s.io/sample-apiserver \
          nnp:k8s.io/kubernetes/test/images/nonewprivs; do
        [ -x "$k8s_bin/${prog%%:*}" ] && continue
        (cd "$dir" && go build -trimpath -ldflags='-s -w' -o "$k8s_bin/${prog%%:*}.tmp" "${prog#*:}")
        mv "$k8s_bin/${prog%%:*}.tmp" "$k8s_bin/${prog%%:*}"
      done
      e2e_etcd=$cache/etcd/$E2E_ETCD_VERSION/bin
      if [ ! -x "$e2e_etcd/etcd" ]; then
        mkdir -p "$e2e_etcd"
        ETCD_VERSION=$E2E_ETCD_VERSION
        dir=$(etcd_wrapper)
        echo "nestor-testbed: building etcd v$E2E_ETCD_VERSION" >&2
        (cd "$dir" && go build -trimpath -ldflags='-s -w' -o "$e2e_etcd/etcd.tmp" .)
        mv "$e2e_etcd/etcd.tmp" "$e2e_etcd/etcd"
        ETCD_VERSION=$(sed -n 's/^ETCD_VERSION=//p' "$here/versions.env")
      fi
      ;;
    etcdutl)
      # etcd's offline tool (snapshot status and restore), which Nestor's
      # backup tool runs. Its module's root is the command itself: a
      # wrapper module pins it and builds that package.
      [ -x "$etcd_bin/etcdutl" ] && continue
      dir=$(etcd_module etcdutl go.etcd.io/etcd/etcdutl/v3 <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/etcdutl/v3"
GO
)
      echo "nestor-testbed: building etcdutl v$ETCD_VERSION" >&2
      start=$SECONDS
      (cd "$dir" && go build -trimpath -ldflags='-s -w' -o "$etcd_bin/etcdutl.tmp" go.etcd.io/etcd/etcdutl/v3)
      mv "$etcd_bin/etcdutl.tmp" "$etcd_bin/etcdutl"
      echo "nestor-testbed: built etcdutl in $((SECONDS - start))s" >&2
      ;;
    versitygw)
      # The S3-compatible store backups are written to (posix backend).
      [ -x "$vgw_bin/versitygw" ] && continue
      go_install versitygw "github.com/versity/versitygw/cmd/versitygw@v$VERSITYGW_VERSION" "$vgw_bin"
      ;;
    metrics-server)
      [ -x "$ms_bin/metrics-server" ] && continue
      go_install metrics-server "sigs.k8s.io/metrics-server/cmd/metrics-server@v$METRICS_SERVER_VERSION" "$ms_bin"
      ;;
    kube-router)
      # The host test bed's NetworkPolicy enforcer. A wrapper module raises
      # the dependencies that carry security fixes past the ones the release
      # pinned.
      [ -x "$kr_bin/kube-router" ] && continue
      dir=$cache/kube-router/$KUBE_ROUTER_VERSION/module
      if [ ! -f "$dir/go.sum" ]; then
        mkdir -p "$dir"
        cat > "$dir/go.mod" <<GO
module nestor.dev/testbed/kube-router

go 1.25

require github.com/cloudnativelabs/kube-router/v2 v$KUBE_ROUTER_VERSION
GO
        cat > "$dir/tools.go" <<'GO'
//go:build tools

package tools

import _ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
GO
        (cd "$dir" && go mod tidy >&2 \
          && go get golang.org/x/net@latest golang.org/x/crypto@latest google.golang.org/grpc@latest \
            google.golang.org/protobuf@latest >&2 \
          && go mod tidy >&2)
      fi
      echo "nestor-testbed: building kube-router v$KUBE_ROUTER_VERSION" >&2
      start=$SECONDS
      (cd "$dir" && go build -trimpath -ldflags='-s -w' -o "$kr_bin/kube-router.tmp" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router)
      mv "$kr_bin/kube-router.tmp" "$kr_bin/kube-router"
      echo "nestor-testbed: built kube-router in $((SECONDS - start))s" >&2
      ;;
    flannel)
      # flanneld, the nested clusters' pod network (VXLAN). Built from its
      # module's source with one change: the Tencent Cloud VPC backend is
      # left out, because its SDK module is not served here; every other
      # backend, VXLAN among them, is upstream's. The UDP backend needs cgo,
      # so the binary is linked statically with it, as upstream's Makefile
      # does.
      [ -x "$flannel_bin/flanneld" ] && continue
      dir=$cache/flannel/$FLANNEL_VERSION/src
      if [ ! -f "$dir/go.sum" ] || [ ! -f "$dir/.nestor-prepared" ]; then
        rm -rf "$dir"
        mkdir -p "$(dirname "$dir")"
        src=$(cd "$(dirname "$dir")" && GOFLAGS=-mod=mod go mod download -json \
          "github.com/flannel-io/flannel@v$FLANNEL_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
        cp -r "$src" "$dir"
        chmod -R u+w "$dir"
        sed -i '/pkg\/backend\/tencentvpc"/d' "$dir/main.go"
        rm -rf "$dir/pkg/backend/tencentvpc"
        (cd "$dir" && go mod tidy >&2)
        touch "$dir/.nestor-prepared"
      fi
      echo "nestor-testbed: building flanneld v$FLANNEL_VERSION" >&2
      start=$SECONDS
      (cd "$dir" && CGO_ENABLED=1 go build -trimpath \
        -ldflags="-s -w -X github.com/flannel-io/flannel/pkg/version.Version=v$FLANNEL_VERSION -extldflags -static" \
        -o "$flannel_bin/flanneld.tmp" .)
      mv "$flannel_bin/flanneld.tmp" "$flannel_bin/flanneld"
      echo "nestor-testbed: built flanneld in $((SECONDS - start))s" >&2
      ;;
    crane)
      # The test bed's image registry (`crane registry serve`) and the tool
      # that pushes the locally built archives into it.
      [ -x "$crane_bin/crane" ] && continue
      go_install crane "github.com/google/go-containerregistry/cmd/crane@v$CRANE_VERSION" "$crane_bin"
      ;;
    pause)
      [ -x "$pause_bin/pause" ] && continue
      dir=$cache/pause/$PAUSE_TAG/module
      mkdir -p "$dir"
      cat > "$dir/go.mod" <<GO
module nestor.dev/testbed/pause

go 1.25
GO
      cat > "$dir/main.go" <<'GO'
// Command pause holds a pod's namespaces open until it is told to stop,
// like the upstream pause container; it also reaps orphaned children.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s == syscall.SIGCHLD {
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}
GO
      (cd "$dir" && go build -trimpath -ldflags='-s -w' -o "$pause_bin/pause" .)
      ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy)
      [ -x "$k8s_bin/$c" ] && continue
      dir=$(k8s_wrapper)
      echo "nestor-testbed: building $c v$K8S_VERSION (several minutes on 2 cores)" >&2
      start=$SECONDS
      ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${K8S_VERSION#1.} -X k8s.io/component-base/version.gitTreeState=clean"
      ldflags="${ldflags/gitMinor=${K8S_VERSION#1.}/gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)}"
      (cd "$dir" && go build -trimpath -ldflags="$ldflags" -o "$k8s_bin/$c.tmp" "k8s.io/kubernetes/cmd/$c")
      mv "$k8s_bin/$c.tmp" "$k8s_bin/$c"
      echo "nestor-testbed: built $c in $((SECONDS - start))s" >&2
      ;;
    *) echo "build-binaries.sh: unknown component '$c'" >&2; exit 2 ;;
  esac
done
echo "$k8s_bin"
