{{/* Names ------------------------------------------------------------------------------ */}}

{{- define "gpu-autoscaler.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-wide base name; component names append -webhook, -scaler, ... so keep room. */}}
{{- define "gpu-autoscaler.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "gpu-autoscaler.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "gpu-autoscaler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gpu-autoscaler
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "webhook") */}}
{{- define "gpu-autoscaler.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpu-autoscaler.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "gpu-autoscaler.componentLabels" -}}
{{ include "gpu-autoscaler.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "gpu-autoscaler.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "gpu-autoscaler.policyName" -}}
{{- default (include "gpu-autoscaler.fullname" .) .Values.policy.name -}}
{{- end -}}

{{- define "gpu-autoscaler.webhookSecret" -}}
{{- default (printf "%s-webhook-tls" (include "gpu-autoscaler.fullname" .)) .Values.certs.secretName -}}
{{- end -}}

{{- define "gpu-autoscaler.webhookService" -}}
{{- printf "%s-webhook" (include "gpu-autoscaler.fullname" .) -}}
{{- end -}}

{{- define "gpu-autoscaler.mutatingName" -}}
{{- printf "%s-mutating" (include "gpu-autoscaler.fullname" .) -}}
{{- end -}}

{{- define "gpu-autoscaler.validatingName" -}}
{{- printf "%s-validating" (include "gpu-autoscaler.fullname" .) -}}
{{- end -}}

{{/* certManager.enabled wins over certs.mode. */}}
{{- define "gpu-autoscaler.certMode" -}}
{{- if .Values.certManager.enabled -}}certManager{{- else -}}{{ .Values.certs.mode }}{{- end -}}
{{- end -}}

{{/* Durations ---------------------------------------------------------------------------
  "3m" -> 180, "1h30m" -> 5400, "90s" -> 90, 120 -> 120. The schema admits only these forms. */}}
{{- define "gpu-autoscaler.seconds" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}
{{- $total := 0 -}}
{{- range $part := regexFindAll "[0-9]+[hms]" $v -1 -}}
{{- $n := int (regexFind "[0-9]+" $part) -}}
{{- if hasSuffix "h" $part -}}{{- $total = add $total (mul $n 3600) -}}
{{- else if hasSuffix "m" $part -}}{{- $total = add $total (mul $n 60) -}}
{{- else -}}{{- $total = add $total $n -}}{{- end -}}
{{- end -}}
{{- $total -}}
{{- else -}}
{{- int $v -}}
{{- end -}}
{{- end -}}

{{/* Seconds as a flag value for our binaries ("180s"). */}}
{{- define "gpu-autoscaler.durationFlag" -}}
{{- printf "%ss" (include "gpu-autoscaler.seconds" .) -}}
{{- end -}}

{{/* Security --------------------------------------------------------------------------- */}}

{{- define "gpu-autoscaler.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}

{{- define "gpu-autoscaler.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end -}}

{{/* Probes on /healthz and /readyz: (dict "port" "http" "scheme" "HTTP") */}}
{{- define "gpu-autoscaler.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
    scheme: {{ default "HTTP" .scheme }}
  initialDelaySeconds: 5
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 6
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ .port }}
    scheme: {{ default "HTTP" .scheme }}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
{{- end -}}

{{/* ServiceAccount: (dict "ctx" $ "component" "scaler" "annotations" map) */}}
{{- define "gpu-autoscaler.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "gpu-autoscaler.fullname" .ctx }}-{{ .component }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "gpu-autoscaler.componentLabels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
  {{- with .annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: true
{{- end -}}

{{/* Kubernetes API versions that moved after 1.20 --------------------------------------- */}}
{{- define "gpu-autoscaler.pdbApiVersion" -}}
{{- /* policy/v1 arrived in 1.21; lint's API list lacks it, so the version decides too. */ -}}
{{- $minor := int (regexReplaceAll "[^0-9]" .Capabilities.KubeVersion.Minor "") -}}
{{- if or (.Capabilities.APIVersions.Has "policy/v1/PodDisruptionBudget") (ge $minor 21) -}}policy/v1{{- else -}}policy/v1beta1{{- end -}}
{{- end -}}

{{/* KubeSchedulerConfiguration version for the scheduler's minor version. */}}
{{- define "gpu-autoscaler.schedulerMinor" -}}
{{- if .Values.scheduler.image.tag -}}
{{- regexReplaceAll "^v?[0-9]+\\.([0-9]+).*$" .Values.scheduler.image.tag "${1}" -}}
{{- else -}}
{{- regexReplaceAll "[^0-9]" .Capabilities.KubeVersion.Minor "" -}}
{{- end -}}
{{- end -}}

{{- define "gpu-autoscaler.schedulerConfigApiVersion" -}}
{{- $minor := int (include "gpu-autoscaler.schedulerMinor" .) -}}
{{- if ge $minor 25 -}}kubescheduler.config.k8s.io/v1
{{- else if ge $minor 22 -}}kubescheduler.config.k8s.io/v1beta2
{{- else -}}kubescheduler.config.k8s.io/v1beta1
{{- end -}}
{{- end -}}

{{- define "gpu-autoscaler.schedulerImage" -}}
{{- $tag := .Values.scheduler.image.tag -}}
{{- if not $tag -}}
{{- $tag = printf "v%s.%s.0" .Capabilities.KubeVersion.Major (regexReplaceAll "[^0-9]" .Capabilities.KubeVersion.Minor "") -}}
{{- end -}}
{{- printf "%s:%s" .Values.scheduler.image.repository $tag -}}
{{- end -}}

{{- define "gpu-autoscaler.agentCloud" -}}
{{- if .Values.agent.cloud -}}{{ .Values.agent.cloud }}
{{- else if eq .Values.autoscaling.provider "kube" -}}none
{{- else -}}{{ .Values.autoscaling.provider }}
{{- end -}}
{{- end -}}
