{{/*
What the research agents search beyond their own image: knowledge sources (volumes mounted
read-only), MCP servers (their header Secrets mounted as files) and a web search provider (its
key mounted as a file). Each is rendered three ways that must agree: the environment the agent
reads, the volumes the pod mounts, and the egress its NetworkPolicy opens.
*/}}

{{/* Where a knowledge source is mounted. */}}
{{- define "podcrew.research.kbMountPath" -}}
{{- .mountPath | default (printf "/var/lib/podcrew/kb/%s" .name) | trimSuffix "/" }}
{{- end }}

{{/*
PODCREW_RESEARCH_KB_SOURCES as a JSON array of NAME=PATH, and the volumes behind it. Names and
mount paths must be unique: two sources under one name would mix their chunk ids.
*/}}
{{- define "podcrew.research.kbSources" -}}
{{- $entries := list }}
{{- $seen := dict }}
{{- range .Values.researchAgent.knowledgeSources }}
{{- $mount := include "podcrew.research.kbMountPath" . }}
{{- if or (hasKey $seen .name) (hasKey $seen $mount) }}
{{- fail (printf "researchAgent.knowledgeSources: the name %q or the mount path %q is used twice" .name $mount) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- $_ := set $seen $mount true }}
{{- $entries = append $entries (printf "%s=%s" .name (ternary (printf "%s/%s" $mount (.path | default "" | trimSuffix "/")) $mount (not (empty .path)))) }}
{{- end }}
{{- toJson $entries }}
{{- end }}

{{/* The directory an MCP server's header Secret is mounted in (`_` is not allowed in a volume name). */}}
{{- define "podcrew.research.mcpVolume" -}}
{{- printf "mcp-%s" (.name | replace "_" "-") }}
{{- end }}

{{/* PODCREW_RESEARCH_MCP_SERVERS: the settings' own shape, the headers as the mounted file. */}}
{{- define "podcrew.research.mcpServers" -}}
{{- $servers := list }}
{{- range .Values.researchAgent.mcpServers }}
{{- $s := dict "name" .name "url" .url }}
{{- $dir := include "podcrew.research.mcpVolume" . }}
{{- with .headers }}
{{- $_ := set $s "headers_file" (printf "/var/run/secrets/podcrew/%s/%s" $dir .secretKey) }}
{{- end }}
{{- with .allowedTools }}{{ $_ := set $s "allowed_tools" . }}{{ end }}
{{- if hasKey . "timeoutSeconds" }}{{ $_ := set $s "timeout_s" .timeoutSeconds }}{{ end }}
{{- if hasKey . "cache" }}{{ $_ := set $s "cache" .cache }}{{ end }}
{{- $servers = append $servers $s }}
{{- end }}
{{- toJson $servers }}
{{- end }}

{{/* The research agent's settings rendered from the values above (part of its ConfigMap). */}}
{{- define "podcrew.research.toolsConfig" -}}
{{- $v := .Values.researchAgent }}
{{- if $v.knowledgeSources }}
PODCREW_RESEARCH_KB_SOURCES: {{ include "podcrew.research.kbSources" . | quote }}
{{- end }}
{{- if $v.mcpServers }}
PODCREW_RESEARCH_MCP_SERVERS: {{ include "podcrew.research.mcpServers" . | quote }}
{{- end }}
{{- $w := $v.webSearch }}
PODCREW_RESEARCH_WEB_SEARCH_PROVIDER: {{ $w.provider | quote }}
{{- if $w.url }}
PODCREW_RESEARCH_WEB_SEARCH_URL: {{ $w.url | quote }}
{{- end }}
PODCREW_RESEARCH_WEB_SEARCH_MAX_RESULTS: {{ $w.maxResults | toJson | quote }}
PODCREW_RESEARCH_WEB_SEARCH_TIMEOUT_S: {{ $w.timeoutSeconds | toJson | quote }}
{{- end }}

{{/* Secret files of the research agent: the agents' own, and the web search key. */}}
{{- define "podcrew.research.secretFiles" -}}
{{ include "podcrew.agent.secretFiles" . }}
{{- with .Values.researchAgent.webSearch.apiKey.existingSecret }}
- {var: PODCREW_RESEARCH_WEB_SEARCH_API_KEY, volume: web-search, secret: {{ . }}, key: {{ $.Values.researchAgent.webSearch.apiKey.secretKey }}}
{{- end }}
{{- end }}

{{/*
Volumes and mounts of the research agent beyond the shared ones, as {volumes, mounts}: the
knowledge sources, read-only and without subPath (a ConfigMap update reaches a volume mounted
whole, as a symlink swap the agent watches for), and each MCP server's header Secret.
*/}}
{{- define "podcrew.research.volumes" -}}
{{- $volumes := list }}
{{- $mounts := list }}
{{- $kube := .Capabilities.KubeVersion.Version }}
{{- range $i, $src := .Values.researchAgent.knowledgeSources }}
{{- $name := printf "kb-%d" $i }}
{{- $volume := dict "name" $name }}
{{- if $src.configMap }}
{{- $_ := set $volume "configMap" (dict "name" $src.configMap.name) }}
{{- else if $src.persistentVolumeClaim }}
{{- $_ := set $volume "persistentVolumeClaim" (dict "claimName" $src.persistentVolumeClaim.claimName "readOnly" true) }}
{{- else }}
{{- if semverCompare "<1.31.0-0" $kube }}
{{- fail (printf "researchAgent.knowledgeSources %q: an image volume needs Kubernetes 1.31 or later (this cluster is %s)" $src.name $kube) }}
{{- end }}
{{- $_ := set $volume "image" (dict "reference" $src.image.reference "pullPolicy" ($src.image.pullPolicy | default "IfNotPresent")) }}
{{- end }}
{{- $volumes = append $volumes $volume }}
{{- $mounts = append $mounts (dict "name" $name "mountPath" (include "podcrew.research.kbMountPath" $src) "readOnly" true) }}
{{- end }}
{{- $headers := list }}
{{- $seen := dict }}
{{- range .Values.researchAgent.mcpServers }}
{{- $dir := include "podcrew.research.mcpVolume" . }}
{{- if hasKey $seen $dir }}
{{- fail (printf "researchAgent.mcpServers: the name %q is used twice (or differs from another only by _ and -)" .name) }}
{{- end }}
{{- $_ := set $seen $dir true }}
{{- with .headers }}
{{- $headers = append $headers (dict "volume" $dir "secret" .existingSecret "key" .secretKey) }}
{{- end }}
{{- end }}
{{- with $headers }}
{{- $volumes = concat $volumes (include "podcrew.secretFiles.volumes" . | fromYamlArray) }}
{{- $mounts = concat $mounts (include "podcrew.secretFiles.mounts" . | fromYamlArray) }}
{{- end }}
{{- toYaml (dict "volumes" $volumes "mounts" $mounts) }}
{{- end }}

{{/*
Egress to one endpoint the research agents call: (dict "url" URL "egress" {to, ports}).
Ports: the given ones, else the URL's, else 443 or 80 by scheme. Peers: the given ones, else
the URL's address when it is an IP literal, else none, which opens the ports to any address:
a NetworkPolicy matches addresses and labels, never DNS names (docs/research-tools.md).
*/}}
{{- define "podcrew.research.egressRule" -}}
{{- $u := urlParse .url }}
{{- $host := $u.host }}
{{- $port := regexFind "[0-9]+$" (regexFind ":[0-9]+$" $host) }}
{{- $address := regexReplaceAll ":[0-9]+$" $host "" | trimPrefix "[" | trimSuffix "]" }}
{{- $ports := .egress.ports | default (list ($port | default (eq $u.scheme "https" | ternary "443" "80"))) }}
{{- $rule := dict "ports" (list) }}
{{- range $ports }}{{ $_ := set $rule "ports" (append $rule.ports (dict "protocol" "TCP" "port" (int .))) }}{{ end }}
{{- if .egress.to }}
{{- $_ := set $rule "to" .egress.to }}
{{- else if regexMatch "^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$" $address }}
{{- $_ := set $rule "to" (list (dict "ipBlock" (dict "cidr" (printf "%s/32" $address)))) }}
{{- else if contains ":" $address }}
{{- $_ := set $rule "to" (list (dict "ipBlock" (dict "cidr" (printf "%s/128" $address)))) }}
{{- end }}
{{- toYaml (list $rule) }}
{{- end }}

{{/* The research agents' egress to the MCP servers and the web search provider configured. */}}
{{- define "podcrew.research.toolsEgress" -}}
{{- $rules := list }}
{{- range .Values.researchAgent.mcpServers }}
{{- $rules = concat $rules (include "podcrew.research.egressRule" (dict "url" .url "egress" (.egress | default dict)) | fromYamlArray) }}
{{- end }}
{{- $w := .Values.researchAgent.webSearch }}
{{- if ne $w.provider "off" }}
{{- $defaults := dict "brave" "https://api.search.brave.com" "tavily" "https://api.tavily.com" }}
{{- $url := $w.url | default (get $defaults $w.provider) }}
{{- $rules = concat $rules (include "podcrew.research.egressRule" (dict "url" $url "egress" $w.egress) | fromYamlArray) }}
{{- end }}
{{- toYaml $rules }}
{{- end }}
