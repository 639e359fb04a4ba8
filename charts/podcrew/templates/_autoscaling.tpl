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
