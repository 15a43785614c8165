{{/*
Chart name, truncated to the 63 characters allowed in a label value.
*/}}
{{- define "nestor.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name of the release's objects. The release name is used as is when it
already contains the chart name.
*/}}
{{- define "nestor.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
Value of the helm.sh/chart label.
*/}}
{{- define "nestor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels on every object of the chart.
*/}}
{{- define "nestor.labels" -}}
helm.sh/chart: {{ include "nestor.chart" . }}
{{ include "nestor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/*
Labels that select the operator pods. Immutable once the Deployment exists.
*/}}
{{- define "nestor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nestor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Name of the ServiceAccount the operator runs as.
*/}}
{{- define "nestor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "nestor.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Operator image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "nestor.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
Fail early on value combinations that cannot work.
*/}}
{{- define "nestor.validateValues" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) -}}
{{- fail "replicaCount > 1 requires leaderElection.enabled=true: without a leader every replica would reconcile the same objects" -}}
{{- end -}}
{{- if and .Values.rbac.clusterWide .Values.rbac.namespaces -}}
{{- fail "rbac.clusterWide=true serves every namespace: leave rbac.namespaces empty, or set rbac.clusterWide=false to serve only those listed" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled=true requires metrics.service.enabled=true: the ServiceMonitor scrapes through the metrics Service" -}}
{{- end -}}
{{- end -}}

{{/*
The namespaces the operator serves, comma-separated; empty when it serves
every namespace (rbac.clusterWide).
*/}}
{{- define "nestor.servedNamespaces" -}}
{{- if not .Values.rbac.clusterWide -}}
{{- join "," (default (list .Release.Namespace) .Values.rbac.namespaces) -}}
{{- end -}}
{{- end -}}

{{/*
The node pods' default placement, as JSON (empty when there is none):
placement.nodePools, with the first of placement.sandboxRuntimeClasses the
host cluster has as its runtimeClassName when it names none.
*/}}
{{- define "nestor.nodePoolPlacement" -}}
{{- $placement := deepCopy .Values.placement.nodePools -}}
{{- if not $placement.runtimeClassName -}}
{{- range .Values.placement.sandboxRuntimeClasses -}}
{{- if and (not $placement.runtimeClassName) (lookup "node.k8s.io/v1" "RuntimeClass" "" .) -}}
{{- $_ := set $placement "runtimeClassName" . -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $placement -}}
{{- toJson $placement -}}
{{- end -}}
{{- end -}}

{{/*
Registry mirrors as the operator reads them: REGISTRY=ENDPOINT[,ENDPOINT];...
*/}}
{{- define "nestor.registryMirrors" -}}
{{- $entries := list -}}
{{- range $registry, $endpoints := . -}}
{{- $entries = append $entries (printf "%s=%s" $registry (join "," $endpoints)) -}}
{{- end -}}
{{- join ";" $entries -}}
{{- end -}}
