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

{{/*
One environment variable per leaf of a settings tree: maps recurse
(config.api.auth.enabled -> SAGAFLOW_API__AUTH__ENABLED), lists render as JSON (what
src/config.rs reads for list settings), strings as they are, numbers and booleans through
toJson (toString would write 1048576 as 1.048576e+06). kafka.properties is a map setting:
one variable per librdkafka property, dots written as `_`, values always strings.
Argument: dict "prefix" "value".
*/}}
{{- define "sagaflow.envTree" -}}
{{- range $key, $value := .value }}
{{- $name := printf "%s%s%s" $.prefix (ternary "_" "__" (eq $.prefix "SAGAFLOW")) (upper $key) }}
{{- if and (eq $.prefix "SAGAFLOW_KAFKA") (eq $key "properties") }}
{{- range $prop, $pv := $value }}
- name: {{ printf "%s__%s" $name (replace "." "_" $prop | upper) }}
  value: {{ ternary $pv (toJson $pv) (kindIs "string" $pv) | quote }}
{{- end }}
{{- else if kindIs "map" $value }}
{{- include "sagaflow.envTree" (dict "prefix" $name "value" $value) }}
{{- else if not (kindIs "invalid" $value) }}
- name: {{ $name }}
  value: {{ ternary $value (toJson $value) (kindIs "string" $value) | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The API tokens the chart passes as SAGAFLOW_API__AUTH__TOKENS (JSON), or nothing:
config.api.auth.tokens plus, with protect_health, the probe token (scope `health`).
Nothing when the tokens come from apiTokens.existingSecret (envFrom): a variable set here
would replace the Secret's list, so the operator puts the probe token's entry there.
*/}}
{{- define "sagaflow.apiTokensJson" -}}
{{- if not .Values.apiTokens.existingSecret }}
{{- $tokens := list }}
{{- range (dig "api" "auth" "tokens" list .Values.config) }}
{{- $tokens = append $tokens . }}
{{- end }}
{{- if and (include "sagaflow.protectHealth" .) .Values.probes.token.value }}
{{- $tokens = append $tokens (include "sagaflow.probeTokenEntry" . | fromJson) }}
{{- end }}
{{- if $tokens }}
{{- toJson $tokens }}
{{- end }}
{{- end }}
{{- end }}

{{/* The probe token as an api.auth.tokens entry: its hash, scope `health` only. */}}
{{- define "sagaflow.probeTokenEntry" -}}
{{- dict "name" "probes" "sha256" (sha256sum .Values.probes.token.value) "scopes" (list "health") | toJson }}
{{- end }}

{{/* "true" when config.api.auth.protect_health is on, else empty. */}}
{{- define "sagaflow.protectHealth" -}}
{{- if dig "api" "auth" "protect_health" false .Values.config }}true{{ end }}
{{- end }}

{{- define "sagaflow.probeTokenSecret" -}}
{{- default (printf "%s-probe-token" (include "sagaflow.fullname" .)) .Values.probes.token.existingSecret }}
{{- end }}

{{/* The Authorization header of the kubelet's httpGet probes, with protect_health. */}}
{{- define "sagaflow.probeHeaders" -}}
{{- if include "sagaflow.protectHealth" . }}
httpHeaders:
  - name: Authorization
    value: {{ printf "Bearer %s" .Values.probes.token.value | quote }}
{{- end }}
{{- end }}

{{/*
"true" when the API requires tokens, else empty: config.api.auth.enabled when it is set,
otherwise whether tokens are given (config.api.auth.tokens or apiTokens.existingSecret).
Giving tokens is the one step that switches auth on; enabled: false is needed to serve
an API open while tokens are configured.
*/}}
{{- define "sagaflow.authEnabled" -}}
{{- $auth := dig "api" "auth" dict .Values.config }}
{{- if include "sagaflow.authEnabledSet" . }}
{{- if $auth.enabled }}true{{ end }}
{{- else if or (dig "tokens" list $auth) .Values.apiTokens.existingSecret }}true{{ end }}
{{- end }}

{{/* "true" when config.api.auth.enabled is set in values (true or false), else empty. */}}
{{- define "sagaflow.authEnabledSet" -}}
{{- $auth := dig "api" "auth" dict .Values.config }}
{{- if and (hasKey $auth "enabled") (not (kindIs "invalid" $auth.enabled)) }}true{{ end }}
{{- end }}

{{/*
Refuse values that would give an API nobody meant to leave open, or probes that cannot
pass. `sagaflow serve` refuses the first case too, but only once the pod runs; failing
here stops it at `helm install`. The default values give no tokens and leave
allow_unauthenticated false, so they fail here on purpose (fail closed): the message
names the one value that fixes either way.
*/}}
{{- define "sagaflow.checkAuth" -}}
{{- $auth := dig "api" "auth" dict .Values.config }}
{{- $enabled := include "sagaflow.authEnabled" . }}
{{- $tokens := dig "tokens" list $auth }}
{{- if not (or $enabled (dig "allow_unauthenticated" false $auth)) }}
{{- if include "sagaflow.authEnabledSet" . }}
{{- fail "the API would run without authentication: config.api.auth.enabled is false. Set it to true (tokens from apiTokens.existingSecret or config.api.auth.tokens), or set config.api.auth.allow_unauthenticated=true to serve the API open on purpose (see docs/deployment.md, API authentication)" }}
{{- else }}
{{- fail "the API would run without authentication: no API tokens are configured. Give them with --set apiTokens.existingSecret=<Secret whose entry SAGAFLOW_API__AUTH__TOKENS holds the token hashes> (or config.api.auth.tokens), which switches authentication on; or, for a throwaway install only, serve the API open to anyone who can reach the Service with --set config.api.auth.allow_unauthenticated=true (see docs/deployment.md, API authentication)" }}
{{- end }}
{{- end }}
{{- if and $enabled (not $tokens) (not .Values.apiTokens.existingSecret) }}
{{- fail "config.api.auth.enabled needs tokens: apiTokens.existingSecret (a Secret with the entry SAGAFLOW_API__AUTH__TOKENS) or config.api.auth.tokens" }}
{{- end }}
{{- if and $tokens .Values.apiTokens.existingSecret }}
{{- fail "API tokens in two places: config.api.auth.tokens would replace the tokens of apiTokens.existingSecret (an explicit variable wins over envFrom); keep them in one" }}
{{- end }}
{{- if include "sagaflow.protectHealth" . }}
{{- if not $enabled }}
{{- fail "config.api.auth.protect_health needs config.api.auth.enabled=true (or tokens, which switch it on)" }}
{{- end }}
{{- if not .Values.probes.token.value }}
{{- fail "config.api.auth.protect_health is on but probes.token.value is empty: the kubelet's probes and the ServiceMonitor need a token with only the `health` scope (see docs/deployment.md, Protected health endpoints)" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Environment shared by the service and the migration containers: settings and secrets.
Both get the same settings (and envFrom), so `sagaflow migrate` accepts exactly the
configuration `sagaflow serve` does.
*/}}
{{- define "sagaflow.env" -}}
{{- $config := deepCopy .Values.config }}
{{- /* Rendered below, together with the probe token. */}}
{{- $_ := unset (dig "api" "auth" dict $config) "tokens" }}
{{- include "sagaflow.envTree" (dict "prefix" "SAGAFLOW" "value" $config) }}
{{- /* Tokens given, enabled unset: auth on. Never false unless set (see authEnabled). */}}
{{- if and (not (include "sagaflow.authEnabledSet" .)) (include "sagaflow.authEnabled" .) }}
- name: SAGAFLOW_API__AUTH__ENABLED
  value: "true"
{{- end }}
{{- with include "sagaflow.apiTokensJson" . }}
- name: SAGAFLOW_API__AUTH__TOKENS
  value: {{ . | quote }}
{{- end }}
{{- with .Values.security.replyKeys }}
{{- if .existingSecret }}
- name: SAGAFLOW_SECURITY__REPLY_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .existingSecretKey }}
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

{{/* The Secret of apiTokens.existingSecret as environment (envFrom), if any. */}}
{{- define "sagaflow.envFrom" -}}
{{- if .Values.apiTokens.existingSecret }}
envFrom:
  - secretRef:
      name: {{ .Values.apiTokens.existingSecret }}
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

{{/*
One NetworkPolicy egress rule from {to, ports}: an empty `to` means any address on those
ports.
*/}}
{{- define "sagaflow.egressRule" -}}
- ports:
    {{- toYaml .ports | nindent 4 }}
  {{- with .to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
