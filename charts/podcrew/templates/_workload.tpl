{{/*
The Deployment, ConfigMap and Service every podcrew service shares; each component file
passes its own values. Parameters:
  root       the top context ($)
  component  the component label: api, worker, research-agent, writer-agent
  values     the component's values block
  image      the image block
  args       the container command (list), set as `command` so no image ENTRYPOINT is assumed
  config       name of the template producing the ConfigMap data (env vars)
  secretFiles  name of the template listing the Secret keys mounted as files (podcrew.secretFiles.env)
  volumes      optional: name of the template giving the component's own {volumes, mounts}
*/}}

{{- define "podcrew.configmap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "podcrew.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "podcrew.labels" . | nindent 4 }}
data:
  {{- include .config .root | trim | nindent 2 }}
  {{- with include "podcrew.redis.config" .root | trim }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- include "podcrew.otel.config" . | trim | nindent 2 }}
{{- end }}

{{- define "podcrew.deployment" -}}
{{- $root := .root }}
{{- $v := .values }}
{{- include "podcrew.checkShutdown" (dict "name" .component "values" $v) }}
{{- $scaler := include "podcrew.scaler" (dict "root" $root "values" $v) }}
{{- $files := list }}
{{- if .secretFiles }}{{ $files = include .secretFiles $root | fromYamlArray }}{{ end }}
{{- $own := dict }}
{{- if .volumes }}{{ $own = include .volumes $root | fromYaml }}{{ end }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "podcrew.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "podcrew.labels" . | nindent 4 }}
spec:
  {{- if eq $scaler "none" }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "podcrew.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      annotations:
        checksum/config: {{ include "podcrew.configmap" . | sha256sum }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      labels:
        {{- include "podcrew.labels" . | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "podcrew.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      containers:
        - name: {{ .component }}
          image: {{ include "podcrew.image" (dict "root" $root "image" .image) }}
          imagePullPolicy: {{ .image.pullPolicy }}
          command:
            {{- toYaml .args | nindent 12 }}
          ports:
            - name: http
              containerPort: {{ $v.port }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "podcrew.componentName" . }}
          {{- if or $files $root.Values.extraEnv $v.extraEnv }}
          env:
            {{- with $files }}
            {{- include "podcrew.secretFiles.env" . | nindent 12 }}
            {{- end }}
            {{- with $root.Values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- end }}
          startupProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 2
            failureThreshold: 60
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          {{- if gt (int $v.preStopSleepSeconds) 0 }}
          lifecycle:
            preStop:
              exec:
                command: ["sleep", "{{ $v.preStopSleepSeconds }}"]
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- with $files }}
            {{- include "podcrew.secretFiles.mounts" . | nindent 12 }}
            {{- end }}
            {{- with $own.mounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $root.Values.tmpSizeLimit }}
        {{- with $files }}
        {{- include "podcrew.secretFiles.volumes" . | nindent 8 }}
        {{- end }}
        {{- with $own.volumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with (include "podcrew.topologySpread" .) }}
      topologySpreadConstraints:
        {{- . | nindent 8 }}
      {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

{{- define "podcrew.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "podcrew.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "podcrew.labels" . | nindent 4 }}
  {{- with .values.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ .values.service.type | default "ClusterIP" }}
  selector:
    {{- include "podcrew.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ .values.service.port }}
      targetPort: http
      protocol: TCP
      appProtocol: http
      {{- if and (eq (.values.service.type | default "ClusterIP") "NodePort") .values.service.nodePort }}
      nodePort: {{ .values.service.nodePort }}
      {{- end }}
{{- end }}

{{- define "podcrew.pdb" -}}
{{- if .values.pdb.enabled }}
{{- if and (not (kindIs "invalid" .values.pdb.minAvailable)) (not (kindIs "invalid" .values.pdb.maxUnavailable)) }}
{{- fail (printf "%s.pdb: set minAvailable or maxUnavailable, not both" .component) }}
{{- end }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "podcrew.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "podcrew.labels" . | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" .values.pdb.minAvailable) }}
  minAvailable: {{ .values.pdb.minAvailable }}
  {{- end }}
  {{- if not (kindIs "invalid" .values.pdb.maxUnavailable) }}
  maxUnavailable: {{ .values.pdb.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "podcrew.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{/* Render a whole component: ConfigMap, Deployment, Service, PDB. */}}
{{- define "podcrew.component" -}}
{{ include "podcrew.configmap" . }}
---
{{ include "podcrew.deployment" . }}
---
{{ include "podcrew.service" . }}
{{- with (include "podcrew.pdb" .) }}
---
{{ . }}
{{- end }}
{{- end }}
