{{/* The components that can autoscale, as (dict "component" ... "values" ...) entries. */}}
{{- define "podcrew.scalables" -}}
{{- $out := list }}
{{- $out = append $out (dict "component" "api" "key" "api") }}
{{- $out = append $out (dict "component" "worker" "key" "worker") }}
{{- $out = append $out (dict "component" "research-agent" "key" "researchAgent") }}
{{- $out = append $out (dict "component" "writer-agent" "key" "writerAgent") }}
{{- toJson $out }}
{{- end }}

{{/* Label matchers of one component's series as scraped through its ServiceMonitor. */}}
{{- define "podcrew.promSelector" -}}
namespace="{{ .root.Release.Namespace }}",service="{{ include "podcrew.componentName" . }}"
{{- end }}

{{/* Share of the component's LLM calls that waited over 1 s for the shared rate limiter. */}}
{{- define "podcrew.limiterWaitedShare" -}}
{{- $w := .root.Values.autoscaling.rateWindow -}}
1 - sum(rate(podcrew_llm_ratelimit_wait_seconds_bucket{ {{- include "podcrew.promSelector" . }},le="1.0"}[{{ $w }}])) / sum(rate(podcrew_llm_ratelimit_wait_seconds_count{ {{- include "podcrew.promSelector" . }}}[{{ $w }}]))
{{- end }}

{{/* Service-wide p95 of the component's /v1 routes, 0 when idle (no NaN for the scaler), and
0 while the shared rate limiter holds calls back: more replicas would only wait longer. */}}
{{- define "podcrew.p95Query" -}}
histogram_quantile(0.95, sum by (le) (rate(podcrew_http_server_request_duration_seconds_bucket{ {{- include "podcrew.promSelector" . }},route=~"/v1/.+"}[{{ .root.Values.autoscaling.rateWindow }}]))) > 0 unless on() ({{ include "podcrew.limiterWaitedShare" . }} > {{ .root.Values.autoscaling.limiterWaitShare }}) or vector(0)
{{- end }}

{{/* The secretTargetRef entries of KEDA's Redis scalers: the password of the data nodes, and
the sentinels' own. Empty when Redis needs none, and then no TriggerAuthentication is rendered. */}}
{{- define "podcrew.redis.kedaSecretRefs" -}}
{{- if .Values.redis.enabled }}
{{- if .Values.redis.auth.enabled }}
- parameter: password
  name: {{ include "podcrew.redis.secretName" . }}
  key: {{ .Values.redis.auth.secretKey }}
{{- end }}
{{- else }}
{{- with .Values.externalRedis.passwordSecret }}{{ if .name }}
- parameter: password
  name: {{ .name }}
  key: {{ .key }}
{{- end }}{{ end }}
{{- with .Values.externalRedis.sentinel.passwordSecret }}{{ if and .name (eq (include "podcrew.redis.mode" $) "sentinel") }}
- parameter: sentinelPassword
  name: {{ .name }}
  key: {{ .key }}
{{- end }}{{ end }}
{{- end }}
{{- end }}

{{/*
The worker's KEDA triggers on the run queue, for the Redis topology in use. Two per stream:
lag (runs not yet delivered to any worker: wakes workers from zero) and pending (runs delivered
and executing: keeps workers while lag is 0). A Redis Cluster holds one stream per queue
partition, `{<prefix>:p<i>}:runs`, and each gets its share of the thresholds (at least 1): runs
spread evenly over the partitions and the HPA follows the largest trigger, so a partition over
its share means the queue is over the whole.
*/}}
{{- define "podcrew.worker.kedaTriggers" -}}
{{- $a := .Values.worker.autoscaling }}
{{- $x := .Values.externalRedis }}
{{- $mode := include "podcrew.redis.mode" . }}
{{- $type := "redis-streams" }}
{{- $streams := list (include "podcrew.runStream" .) }}
{{- $connection := dict }}
{{- if eq $mode "standalone" }}
{{- $connection = dict "address" (include "podcrew.redis.address" .) "databaseIndex" (toString .Values.redis.database) }}
{{- else if eq $mode "sentinel" }}
{{- $type = "redis-sentinel-streams" }}
{{- $connection = dict "addresses" (join "," $x.sentinel.addresses) "sentinelMaster" $x.sentinel.service "databaseIndex" (toString .Values.redis.database) }}
{{- else if eq $mode "cluster" }}
{{- $type = "redis-cluster-streams" }}
{{- $connection = dict "addresses" (required "externalRedis.cluster.addresses (host:port of cluster nodes) is needed for KEDA's redis-cluster-streams scaler" (join "," $x.cluster.addresses)) }}
{{- $streams = list }}
{{- range $i := until (int .Values.orchestrator.config.queue_partitions) }}
{{- $streams = append $streams (printf "{%s:p%d}:runs" $.Values.orchestrator.config.key_prefix $i) }}
{{- end }}
{{- end }}
{{- if and (not .Values.redis.enabled) $x.enableTLS }}
{{- $_ := set $connection "enableTLS" "true" }}
{{- end }}
{{- $n := len $streams }}
{{- $auth := include "podcrew.redis.kedaSecretRefs" . | trim }}
{{- range $i, $stream := $streams }}
{{- $suffix := ternary (printf "-p%d" $i) "" (eq $mode "cluster") }}
- type: {{ $type }}
  name: run-queue-lag{{ $suffix }}
  metadata:
    {{- toYaml $connection | nindent 4 }}
    stream: {{ $stream | quote }}
    consumerGroup: workers
    lagCount: {{ max 1 (div (int $a.targetLagPerReplica) $n) | quote }}
    activationLagCount: {{ div (int $a.activationLag) $n | quote }}
  {{- if $auth }}
  authenticationRef:
    name: {{ include "podcrew.componentName" (dict "root" $ "component" "redis-keda") }}
  {{- end }}
- type: {{ $type }}
  name: run-queue-pending{{ $suffix }}
  metadata:
    {{- toYaml $connection | nindent 4 }}
    stream: {{ $stream | quote }}
    consumerGroup: workers
    pendingEntriesCount: {{ max 1 (div (int $a.targetPendingPerReplica) $n) | quote }}
  {{- if $auth }}
  authenticationRef:
    name: {{ include "podcrew.componentName" (dict "root" $ "component" "redis-keda") }}
  {{- end }}
{{- end }}
{{- end }}
