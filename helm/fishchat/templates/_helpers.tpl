{{/*
Names and labels shared by every template.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "fishchat.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: "<release>-<chart>", or the release name when it already contains the
chart name, or fullnameOverride. 63 characters at most (DNS label); "-operator" etc. are appended, so
names are cut to leave room for them.
*/}}
{{- define "fishchat.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "fishchat.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object of the release. */}}
{{- define "fishchat.labels" -}}
helm.sh/chart: {{ include "fishchat.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fishchat
{{- end }}

{{/* The operator: its name, selector and labels (name "<chart>-operator", as operator/rbac/ has it). */}}
{{- define "fishchat.operator.fullname" -}}
{{- printf "%s-operator" (include "fishchat.fullname" .) }}
{{- end }}

{{- define "fishchat.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fishchat.name" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "fishchat.operator.labels" -}}
{{ include "fishchat.labels" . }}
app.kubernetes.io/name: {{ include "fishchat.name" . }}-operator
app.kubernetes.io/component: operator
{{- end }}

{{- define "fishchat.operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fishchat.operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "fishchat.operator.image" -}}
{{- printf "%s:%s" .Values.operator.image.repository (.Values.operator.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Labels of the chart's monitoring objects (ServiceMonitor, PrometheusRule, dashboard). */}}
{{- define "fishchat.monitoring.labels" -}}
{{ include "fishchat.labels" . }}
app.kubernetes.io/name: {{ include "fishchat.name" . }}
app.kubernetes.io/component: monitoring
{{- end }}

{{/* The optional FishChatCluster's namespace. */}}
{{- define "fishchat.cluster.namespace" -}}
{{- .Values.cluster.namespace | default .Release.Namespace }}
{{- end }}
