{{/* Release-scoped name, at most 63 characters. */}}
{{- define "dogfs-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dogfs-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dogfs-operator.labels" -}}
{{ include "dogfs-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: dogfs
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "dogfs-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dogfs-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The operator's permissions; shared by the ClusterRole and the per-namespace Roles. */}}
{{- define "dogfs-operator.rules" -}}
- apiGroups: ["dogfs.io"]
  resources: ["dogclusters"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["dogfs.io"]
  resources: ["dogclusters/status"]
  verbs: ["get", "patch"]
# Owner references with blockOwnerDeletion need this where OwnerReferencesPermissionEnforcement is on.
- apiGroups: ["dogfs.io"]
  resources: ["dogclusters/finalizers"]
  verbs: ["update"]
# Server-side apply creates and updates; the garbage collector deletes, so no delete verb,
# except for the S3 gateway's Deployment, Service and PDB, deleted when spec.s3 is switched off.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Chunk scale-down: a server leaves the registry only once its pod is gone (list, by label).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Chunk scale-down with pvcRetention.whenScaled: Delete: the operator deletes a removed
# server's claim itself (the StatefulSet's own whenScaled stays Retain).
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["list", "delete"]
# spec.tls and spec.auth: read a given TLS or auth Secret (its ca.crt and token); create and
# patch (server-side apply, merge) the operator's own: <c>-ca, <c>-{meta,chunk,gateway}-tls
# (issued and renewed in place) and <c>-auth (generated once, never regenerated). No list or
# watch: the operator reads Secrets by name only, never the namespace's others.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
# spec.networkPolicy: the <c>-meta and <c>-chunk NetworkPolicies (server-side apply; deleted
# when switched off).
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch", "delete"]
# spec.tls.issuerRef: a cert-manager Certificate per component. Harmless without cert-manager
# (the operator then reports TLSReady=False, CertManagerMissing).
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
