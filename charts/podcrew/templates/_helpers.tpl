{{/*
Naming and labels, after the helpers `helm create` writes and argo-helm's component-aware
`_common.tpl`. Selectors use only name, instance and component: never the version or chart,
which change on upgrade while a Deployment's selector is immutable.
*/}}

{{- define "podcrew.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name, trimmed to 63 characters (the DNS label limit). */}}
{{- define "podcrew.fullname" -}}
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

{{- define "podcrew.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of one component's objects: (dict "root" $ "component" "worker"). */}}
{{- define "podcrew.componentName" -}}
{{- printf "%s-%s" (include "podcrew.fullname" .root | trunc 50 | trimSuffix "-") .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of the whole release (every podcrew pod). */}}
{{- define "podcrew.releaseSelectorLabels" -}}
app.kubernetes.io/name: {{ include "podcrew.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "api"). */}}
{{- define "podcrew.selectorLabels" -}}
{{ include "podcrew.releaseSelectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Every label of one component's objects: (dict "root" $ "component" "api"). */}}
{{- define "podcrew.labels" -}}
helm.sh/chart: {{ include "podcrew.chart" .root }}
{{ include "podcrew.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: podcrew
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "podcrew.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "podcrew.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: (dict "root" $ "image" .Values.x.image). Empty tag: the appVersion. */}}
{{- define "podcrew.image" -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion | toString }}
{{- if .image.digest }}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/*
The engine that scales a component: "keda", "hpa" or "none".
(dict "root" $ "values" .Values.worker)
*/}}
{{- define "podcrew.scaler" -}}
{{- $a := .values.autoscaling }}
{{- if not $a.enabled }}none
{{- else }}{{ $a.mode | default .root.Values.autoscaling.mode }}
{{- end }}
{{- end }}

{{/* HPA behavior of a component: its own, else the global one. */}}
{{- define "podcrew.behavior" -}}
{{- toYaml (.values.autoscaling.behavior | default .root.Values.autoscaling.behavior) }}
{{- end }}

{{/* Redis */}}
{{- define "podcrew.redis.host" -}}
{{- include "podcrew.componentName" (dict "root" . "component" "redis") }}
{{- end }}

{{- define "podcrew.redis.secretName" -}}
{{- .Values.redis.auth.existingSecret | default (include "podcrew.componentName" (dict "root" . "component" "redis")) }}
{{- end }}

{{/* The Redis topology the services reach: "standalone", "sentinel" or "cluster" (the in-chart
Redis is one server; the schema refuses the other two with it). */}}
{{- define "podcrew.redis.mode" -}}
{{- if .Values.redis.enabled }}standalone{{ else }}{{ .Values.externalRedis.mode | default "standalone" }}{{ end }}
{{- end }}

{{/* host:port KEDA's redis-streams scaler connects to. */}}
{{- define "podcrew.redis.address" -}}
{{- if .Values.redis.enabled }}
{{- printf "%s.%s.svc:%d" (include "podcrew.redis.host" .) .Release.Namespace (int .Values.redis.port) }}
{{- else }}
{{- required "externalRedis.address (host:port) is needed for KEDA's redis-streams scaler" .Values.externalRedis.address }}
{{- end }}
{{- end }}

{{/*
The run queue: stream "<keyPrefix>:runs", consumer group "workers" (docs/architecture.md).
*/}}
{{- define "podcrew.runStream" -}}
{{- printf "%s:runs" .Values.orchestrator.config.key_prefix }}
{{- end }}

{{/*
Redis settings of every podcrew service (the api and worker keep runs there, the agents the
spend ledger and the tool cache): the URL without a password for the ConfigMap; the password,
or an external URL from an existing Secret, as a file (podcrew.redis.secretFiles). An external
Redis also says its topology and how many replicas a write must reach; through Sentinel the
sentinels give the primary's address, so the URL is optional there.
*/}}
{{- define "podcrew.redis.config" -}}
{{- $x := .Values.externalRedis }}
{{- $mode := include "podcrew.redis.mode" . }}
{{- if .Values.redis.enabled }}
PODCREW_REDIS_URL: {{ printf "redis://%s:%d/%d" (include "podcrew.redis.host" .) (int .Values.redis.port) (int .Values.redis.database) | quote }}
{{- else }}
{{- if and (not $x.existingSecret) (or $x.url (ne $mode "sentinel")) }}
PODCREW_REDIS_URL: {{ required "redis.enabled is false: set externalRedis.url or externalRedis.existingSecret" $x.url | quote }}
{{- end }}
PODCREW_REDIS_MODE: {{ $mode | quote }}
{{- if eq $mode "sentinel" }}
PODCREW_REDIS_SENTINELS: {{ join "," $x.sentinel.addresses | quote }}
PODCREW_REDIS_SENTINEL_SERVICE: {{ $x.sentinel.service | quote }}
{{- end }}
PODCREW_REDIS_MIN_REPLICAS: {{ int $x.minReplicas | quote }}
PODCREW_REDIS_WAIT_TIMEOUT_MS: {{ int $x.waitTimeoutMs | quote }}
{{- end }}
{{- end }}

{{- define "podcrew.redis.secretFiles" -}}
{{- if and .Values.redis.enabled .Values.redis.auth.enabled }}
- {var: PODCREW_REDIS_PASSWORD, volume: redis, secret: {{ include "podcrew.redis.secretName" . }}, key: {{ .Values.redis.auth.secretKey }}}
{{- else if and (not .Values.redis.enabled) .Values.externalRedis.existingSecret }}
- {var: PODCREW_REDIS_URL, volume: redis, secret: {{ .Values.externalRedis.existingSecret }}, key: {{ .Values.externalRedis.existingSecretKey }}}
{{- end }}
{{- $sentinel := .Values.externalRedis.sentinel.passwordSecret }}
{{- if and (eq (include "podcrew.redis.mode" .) "sentinel") $sentinel.name }}
- {var: PODCREW_REDIS_SENTINEL_PASSWORD, volume: redis-sentinel, secret: {{ $sentinel.name }}, key: {{ $sentinel.key }}}
{{- end }}
{{- end }}

{{/*
Secrets reach the processes as files, never as environment variables (docs/deploy.md): each
entry of a component's list, {var, volume, secret, key}, mounts one key of a Secret read-only
at /var/run/secrets/podcrew/<volume>/<key> and sets `<var>_FILE` to that path, which every
podcrew setting marked secret reads (docs/configuration.md).
*/}}
{{- define "podcrew.secretFiles.env" -}}
{{- range . }}
- name: {{ .var }}_FILE
  value: {{ printf "/var/run/secrets/podcrew/%s/%s" .volume .key | quote }}
{{- end }}
{{- end }}

{{- define "podcrew.secretFiles.mounts" -}}
{{- range . }}
- name: secret-{{ .volume }}
  mountPath: /var/run/secrets/podcrew/{{ .volume }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "podcrew.secretFiles.volumes" -}}
{{- range . }}
- name: secret-{{ .volume }}
  secret:
    secretName: {{ .secret }}
    # Readable by the pod's group (fsGroup) only: the processes run as that group.
    defaultMode: 0440
    items:
      - key: {{ .key }}
        path: {{ .key }}
{{- end }}
{{- end }}

{{/*
A settings map as environment: (dict "prefix" "PODCREW_RESEARCH_" "config" .Values.researchAgent.config).
`key` becomes PREFIX + KEY; null is left out (the service's own default applies); strings go
as they are, everything else as JSON, which is how pydantic-settings reads numbers, booleans,
lists and maps (and keeps 1000000 from turning into 1e+06).
*/}}
{{- define "podcrew.settingsEnv" -}}
{{- $prefix := .prefix }}
{{- range $key, $value := .config }}
{{- if not (kindIs "invalid" $value) }}
{{ printf "%s%s" $prefix (upper $key) }}: {{ (ternary $value (toJson $value) (kindIs "string" $value)) | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* LLM */}}
{{- define "podcrew.llm.simulatorUrl" -}}
{{- if .Values.llm.simulator.enabled }}
{{- printf "http://%s:%d" (include "podcrew.componentName" (dict "root" . "component" "llm-simulator")) (int .Values.llm.simulator.port) }}
{{- else }}
{{- required "llm.provider is simulated and llm.simulator.enabled is false: set llm.simulator.url" .Values.llm.simulator.url }}
{{- end }}
{{- end }}

{{- define "podcrew.llm.simulatorEnabled" -}}
{{- if and (eq .Values.llm.provider "simulated") .Values.llm.simulator.enabled }}true{{- end }}
{{- end }}

{{/* Non-secret LLM settings, for the ConfigMaps of the worker and the agents. */}}
{{- define "podcrew.llm.config" -}}
PODCREW_LLM_PROVIDER: {{ .Values.llm.provider | quote }}
{{- include "podcrew.settingsEnv" (dict "prefix" "PODCREW_LLM_" "config" .Values.llm.config) }}
{{- if eq .Values.llm.provider "simulated" }}
PODCREW_LLM_SIMULATOR_URL: {{ include "podcrew.llm.simulatorUrl" . | quote }}
{{- else if and (eq .Values.llm.provider "anthropic") .Values.llm.anthropic.baseUrl }}
ANTHROPIC_BASE_URL: {{ .Values.llm.anthropic.baseUrl | quote }}
{{- end }}
{{- end }}

{{/* Secret LLM settings: the Anthropic key from an existing Secret (ANTHROPIC_API_KEY_FILE). */}}
{{- define "podcrew.llm.secretFiles" -}}
{{- if eq .Values.llm.provider "anthropic" }}
- {var: ANTHROPIC_API_KEY, volume: anthropic, secret: {{ required "llm.provider is anthropic: set llm.anthropic.existingSecret to a Secret holding the API key" .Values.llm.anthropic.existingSecret }}, key: {{ .Values.llm.anthropic.secretKey }}}
{{- end }}
{{- end }}

{{/* The token the worker presents to the agents and the agents require. */}}
{{- define "podcrew.serviceToken.secretName" -}}
{{- .Values.serviceToken.existingSecret | default (include "podcrew.componentName" (dict "root" . "component" "service-token")) }}
{{- end }}

{{- define "podcrew.serviceToken.secretFiles" -}}
{{- if .Values.serviceToken.enabled }}
- {var: PODCREW_SERVICE_TOKEN, volume: service-token, secret: {{ include "podcrew.serviceToken.secretName" . }}, key: {{ .Values.serviceToken.secretKey }}}
{{- end }}
{{- end }}

{{/* Secret files of the agents. */}}
{{- define "podcrew.agent.secretFiles" -}}
{{ include "podcrew.redis.secretFiles" . }}
{{ include "podcrew.llm.secretFiles" . }}
{{ include "podcrew.serviceToken.secretFiles" . }}
{{- end }}

{{/*
Completion webhooks, read by the api (are they on?) and the worker (it sends them): the
settings for the ConfigMap, and the signing secret from an existing Secret. Nothing when off.
*/}}
{{- define "podcrew.webhooks.config" -}}
{{- if .Values.webhooks.enabled }}
{{- include "podcrew.settingsEnv" (dict "prefix" "PODCREW_WEBHOOK_" "config" .Values.webhooks.config) }}
{{- end }}
{{- end }}

{{- define "podcrew.webhooks.secretFiles" -}}
{{- if .Values.webhooks.enabled }}
- {var: PODCREW_WEBHOOK_SECRET, volume: webhook, secret: {{ required "webhooks.enabled is true: set webhooks.existingSecret to a Secret holding the signing secret (at least 16 characters); the chart never takes it as a value" .Values.webhooks.existingSecret }}, key: {{ .Values.webhooks.secretKey }}}
{{- end }}
{{- end }}

{{/* OpenTelemetry environment: (dict "root" $ "component" "api"). */}}
{{- define "podcrew.otel.config" -}}
{{- $o := .root.Values.otel }}
OTEL_SERVICE_NAME: {{ printf "podcrew-%s" .component | quote }}
OTEL_RESOURCE_ATTRIBUTES: {{ printf "service.namespace=podcrew,deployment.environment.name=%s%s" .root.Release.Namespace (ternary (printf ",%s" $o.resourceAttributes) "" (ne $o.resourceAttributes "")) | quote }}
{{- if $o.enabled }}
OTEL_SDK_DISABLED: "false"
OTEL_EXPORTER_OTLP_ENDPOINT: {{ $o.endpoint | quote }}
OTEL_EXPORTER_OTLP_PROTOCOL: {{ $o.protocol | quote }}
OTEL_TRACES_SAMPLER: {{ $o.sampler | quote }}
OTEL_TRACES_SAMPLER_ARG: {{ $o.samplerArg | quote }}
OTEL_PROPAGATORS: {{ $o.propagators | quote }}
{{- else }}
OTEL_SDK_DISABLED: "true"
{{- end }}
{{- end }}

{{/*
Refuse shutdown timings Kubernetes would cut short: the kubelet's grace period covers the
preStop sleep and then the process's own graceful shutdown. A worker's shutdown is up to
twice its graceful shutdown (its runs finish, then webhooks in flight), then it hands the
runs still unfinished back to the queue: that must happen before the kubelet's SIGKILL.
(dict "name" "api" "values" .Values.api)
*/}}
{{- define "podcrew.checkShutdown" -}}
{{- $v := .values }}
{{- $drains := eq .name "worker" | ternary 2 1 }}
{{- if ge (add (int $v.preStopSleepSeconds) (mul $drains (int (ceil $v.gracefulShutdownSeconds)))) (int $v.terminationGracePeriodSeconds) }}
{{- fail (printf "%s: preStopSleepSeconds (%v) + %d x gracefulShutdownSeconds (%v) must be less than terminationGracePeriodSeconds (%v)" .name $v.preStopSleepSeconds $drains $v.gracefulShutdownSeconds $v.terminationGracePeriodSeconds) }}
{{- end }}
{{- end }}

{{/* The component's topology spread: its own, else the default spread over nodes. */}}
{{- define "podcrew.topologySpread" -}}
{{- if .values.topologySpreadConstraints }}
{{- toYaml .values.topologySpreadConstraints }}
{{- else if .root.Values.defaultTopologySpread }}
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "podcrew.selectorLabels" (dict "root" .root "component" .component) | nindent 6 }}
  matchLabelKeys:
    - pod-template-hash
{{- end }}
{{- end }}
