{{/*
One nasloop service: Deployment, Service, ServiceAccount and (with more than one replica) a
PodDisruptionBudget. Arguments (a dict):
  root        the chart's root context
  component   generator | evaluator | novelty | trainer | controller
  values      the component's values
  gpu         whether it runs on a GPU node and requests one (with gpu.enabled)
  torch       whether its image has a cpu/gpu variant
  kubeApi     whether its pods need a Kubernetes API token (their Role is in rbac.yaml)
  replicas    pod count (1 for components that keep state in memory)
  volumes     extra volumes (list), mounts: their mounts (list), env: extra env (list)
  init        optional: the command of an init container (same image, env and mounts)
*/}}
{{- define "nasloop.component" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- $name := include "nasloop.name" . -}}
{{- $gpu := and .gpu $root.Values.gpu.enabled -}}
{{- $period := 10 -}}
{{- $tls := $root.Values.tls -}}
{{- /* With mutual TLS the kubelet's gRPC probes (which speak no TLS) ask the plaintext
       health-only port. */ -}}
{{- $probePort := ternary $tls.healthPort $v.port $tls.enabled -}}
{{- $cycleStore := and $tls.enabled (eq .component "controller") -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels: {{- include "nasloop.labels" . | nindent 4 }}
automountServiceAccountToken: {{ .kubeApi }}
{{- with include "nasloop.imagePullSecrets" $root }}
{{ . }}
{{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels: {{- include "nasloop.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector: {{- include "nasloop.selectorLabels" . | nindent 4 }}
  ports:
    - {name: grpc, port: {{ $v.port }}, targetPort: grpc, protocol: TCP, appProtocol: grpc}
    {{- if $cycleStore }}
    - {name: cycle-store, port: {{ $tls.cyclePort }}, targetPort: cycle-store, protocol: TCP, appProtocol: grpc}
    {{- end }}
    - {name: metrics, port: {{ $root.Values.metricsPort }}, targetPort: metrics, protocol: TCP}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels: {{- include "nasloop.labels" . | nindent 4 }}
spec:
  replicas: {{ .replicas }}
  {{- if eq (int .replicas) 1 }}
  strategy: {type: Recreate}
  {{- end }}
  selector:
    matchLabels: {{- include "nasloop.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels: {{- include "nasloop.labels" . | nindent 8 }}
      annotations:
        checksum/config: {{ include "nasloop.config" $root | sha256sum }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ $name }}
      automountServiceAccountToken: {{ .kubeApi }}
      enableServiceLinks: false
      securityContext: {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- with include "nasloop.imagePullSecrets" $root }}
      {{- . | nindent 6 }}
      {{- end }}
      {{- with $root.Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with (include "nasloop.gpuScheduling" . | trim) }}
      {{- . | nindent 6 }}
      {{- end }}
      terminationGracePeriodSeconds: 30
      {{- with .init }}
      initContainers:
        - name: prepare
          command: {{- toYaml . | nindent 12 }}
          {{- include "nasloop.container" $ | nindent 10 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          command: [nasloop, serve, {{ .component }}]
          {{- include "nasloop.container" . | nindent 10 }}
          ports:
            - {name: grpc, containerPort: {{ $v.port }}, protocol: TCP}
            {{- if $cycleStore }}
            - {name: cycle-store, containerPort: {{ $tls.cyclePort }}, protocol: TCP}
            {{- end }}
            - {name: metrics, containerPort: {{ $root.Values.metricsPort }}, protocol: TCP}
          startupProbe:
            grpc: {port: {{ $probePort }}}
            periodSeconds: {{ $period }}
            failureThreshold: {{ max 1 (div (int $v.startupSeconds) $period) }}
          readinessProbe:
            grpc: {port: {{ $probePort }}}
            periodSeconds: {{ $period }}
            failureThreshold: 3
          livenessProbe:
            grpc: {port: {{ $probePort }}}
            periodSeconds: 20
            timeoutSeconds: 5
            failureThreshold: 6
      volumes:
        - name: config
          configMap: {name: {{ include "nasloop.fullname" $root }}-config}
        - {name: work, emptyDir: {}}
        - {name: tmp, emptyDir: {}}
        {{- if $tls.enabled }}
        - name: tls
          secret: {secretName: {{ $name }}-tls}
        - name: tls-cycle
          secret:
            secretName: {{ include "nasloop.fullname" $root }}-cycle-ca
            {{- if not $cycleStore }}
            items: [{key: tls.crt, path: tls.crt}]  # the cycle CA's key: the controller's only
            {{- end }}
        {{- end }}
        {{- with .volumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- if gt (int .replicas) 1 }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels: {{- include "nasloop.labels" . | nindent 4 }}
spec:
  minAvailable: 1
  selector:
    matchLabels: {{- include "nasloop.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/* The parts of a component's containers that its init container shares: image, env,
resources, security context, mounts. */}}
{{- define "nasloop.container" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- $gpu := and .gpu $root.Values.gpu.enabled -}}
image: {{ include "nasloop.image" . }}
imagePullPolicy: {{ $root.Values.image.pullPolicy }}
env:
  - {name: NASLOOP_CONFIG, value: /etc/nasloop/config.yaml}
  {{- include "nasloop.storeEnv" $root | nindent 2 }}
  {{- with .env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with $v.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
resources:
  {{- $res := deepCopy $v.resources -}}
  {{- if $gpu -}}
  {{- /* One GPU unless the component's resources name another count (limits first); an
         extended resource's request must equal its limit. */ -}}
  {{- $r := $root.Values.gpu.resource -}}
  {{- $limits := $res.limits | default dict -}}
  {{- $requests := $res.requests | default dict -}}
  {{- $n := index $limits $r | default (index $requests $r) | default 1 -}}
  {{- $_ := set $limits $r $n -}}
  {{- $_ := set $requests $r $n -}}
  {{- $_ := set $res "limits" $limits -}}
  {{- $_ := set $res "requests" $requests -}}
  {{- end }}
  {{- toYaml $res | nindent 2 }}
securityContext: {{- include "nasloop.containerSecurityContext" . | nindent 2 }}
volumeMounts:
  - {name: config, mountPath: /etc/nasloop, readOnly: true}
  - {name: work, mountPath: /var/lib/nasloop}
  - {name: tmp, mountPath: /tmp}
  {{- if $root.Values.tls.enabled }}
  - {name: tls, mountPath: /etc/nasloop/tls, readOnly: true}
  - {name: tls-cycle, mountPath: /etc/nasloop/tls-cycle, readOnly: true}
  {{- end }}
  {{- with .mounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}
