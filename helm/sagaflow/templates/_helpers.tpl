{{/* Chart name, truncated to the 63 characters Kubernetes allows. */}}
{{- define "sagaflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sagaflow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sagaflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sagaflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sagaflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "sagaflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sagaflow
{{- end }}

{{- define "sagaflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sagaflow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sagaflow.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "sagaflow.sagasConfigMap" -}}
{{- default (printf "%s-sagas" (include "sagaflow.fullname" .)) .Values.sagas.existingConfigMap }}
{{- end }}

{{- define "sagaflow.databaseSecret" -}}
{{- default (printf "%s-database" (include "sagaflow.fullname" .)) .Values.database.existingSecret }}
{{- end }}

{{/*
Refuse values that cannot drain in time: after SIGTERM sagaflow waits up to
shutdown_timeout_s for intake, half of it for the outbox relay and 5 s for the producer
flush, after the preStop sleep.
*/}}
{{- define "sagaflow.checkGracePeriod" -}}
{{- $shutdown := int (default 20 (dig "runtime" "shutdown_timeout_s" 20 .Values.config)) }}
{{- $need := add (int .Values.preStopSleepSeconds) $shutdown (div $shutdown 2) 5 }}
{{- if le (int .Values.terminationGracePeriodSeconds) $need }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + 1.5 x config.runtime.shutdown_timeout_s + 5 = %d" (int .Values.terminationGracePeriodSeconds) $need) }}
{{- end }}
{{- end }}

{{/* Environment shared by the service and the migration job: settings and secrets. */}}
{{- define "sagaflow.env" -}}
{{- range $section, $keys := .Values.config }}
{{- range $key, $value := $keys }}
{{- if eq $key "properties" }}
{{- range $prop, $pv := $value }}
- name: {{ printf "SAGAFLOW_%s__PROPERTIES__%s" (upper $section) (replace "." "_" $prop | upper) }}
  value: {{ $pv | toString | quote }}
{{- end }}
{{- else }}
- name: {{ printf "SAGAFLOW_%s__%s" (upper $section) (upper $key) }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- end }}
- name: SAGAFLOW_DATABASE__URL
  valueFrom:
    secretKeyRef:
      name: {{ include "sagaflow.databaseSecret" . }}
      key: {{ ternary .Values.database.existingSecretKey "url" (ne .Values.database.existingSecret "") }}
{{- with .Values.kafka.sasl }}
{{- if .existingSecret }}
- name: SAGAFLOW_KAFKA__PROPERTIES__SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .usernameKey }}
- name: SAGAFLOW_KAFKA__PROPERTIES__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .passwordKey }}
{{- end }}
{{- end }}
{{- if .Values.kafka.tls.caSecret }}
- name: SAGAFLOW_KAFKA__PROPERTIES__SSL_CA_LOCATION
  value: /etc/sagaflow/kafka-ca/{{ .Values.kafka.tls.caKey }}
{{- end }}
{{- end }}

{{- define "sagaflow.otelEnv" -}}
{{- if .Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otel.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ .Values.otel.protocol | quote }}
{{- end }}
- name: OTEL_SERVICE_NAME
  value: {{ .Values.otel.serviceName | quote }}
{{- end }}

{{- define "sagaflow.kafkaCaVolume" -}}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
{{- end }}
{{- end }}

{{- define "sagaflow.kafkaCaMount" -}}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/sagaflow/kafka-ca
  readOnly: true
{{- end }}
{{- end }}
