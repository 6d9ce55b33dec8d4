{{- define "herald.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "herald.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one role: pass (dict "root" $ "role" "ingest"). */}}
{{- define "herald.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "herald.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "herald.secretName" -}}
{{ include "herald.fullname" . }}
{{- end -}}

{{/* The port of /metrics, /healthz, /readyz: the FHIR port for run and ingest. */}}
{{- define "herald.healthPort" -}}
{{- /* With authentication on, the FHIR roles serve health and metrics on the admin port. */ -}}
{{- if and (or (eq .role "ingest") (eq .role "run")) (eq .auth "none") -}}8080{{- else -}}9100{{- end -}}
{{- end -}}

{{/* Environment of every Herald container: the ConfigMap, the chart's Secret, the user's. */}}
{{- define "herald.envFrom" -}}
- configMapRef:
    name: {{ include "herald.fullname" . }}
- secretRef:
    name: {{ include "herald.secretName" . }}
{{- with .Values.existingSecret }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end -}}

{{- define "herald.env" -}}
{{- if .Values.database.existingSecret }}
- name: HERALD_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.existingSecretKey }}
{{- end }}
{{- end -}}

{{/* Environment of one role's container: the common one, and for Kafka consumers (matcher,
dispatcher) the pod name as static group member name, so a container restarted in its pod
takes its partitions back at once (docs/operations.md). */}}
{{- define "herald.roleEnv" -}}
{{- include "herald.env" .root }}
{{- if and .root.Values.kafka.staticMembership (has .role (list "matcher" "dispatcher")) }}
- name: HERALD_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
{{- end -}}

{{- define "herald.podSecurity" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
automountServiceAccountToken: false
serviceAccountName: {{ include "herald.fullname" . }}
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
