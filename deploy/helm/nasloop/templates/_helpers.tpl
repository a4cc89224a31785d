{{/* Names ------------------------------------------------------------------------------- */}}
{{- define "nasloop.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "nasloop.name" -}}
{{- printf "%s-%s" (include "nasloop.fullname" .root) .component -}}
{{- end -}}

{{- define "nasloop.selectorLabels" -}}
app.kubernetes.io/name: nasloop
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "nasloop.labels" -}}
{{ include "nasloop.selectorLabels" . }}
app.kubernetes.io/part-of: nasloop
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* Images: <registry>/<prefix>/<component>:<tag>[-cpu|-gpu] ----------------------------- */}}
{{- define "nasloop.image" -}}
{{- $img := .root.Values.image -}}
{{- $tag := $img.tag | default .root.Chart.AppVersion -}}
{{- if .torch }}{{ $tag = printf "%s-%s" $tag $img.variant }}{{ end -}}
{{- $repo := printf "%s/%s" $img.repositoryPrefix .component -}}
{{- if $img.registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" $img.registry) $repo }}{{ end -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/* image.pullSecrets as a pod spec or a ServiceAccount takes them (nothing when there are
none), for every pod the chart makes; the Jobs the services make get them from the config. */}}
{{- define "nasloop.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* The object store --------------------------------------------------------------------- */}}
{{- define "nasloop.storeSecret" -}}
{{- .Values.store.existingSecret | default (printf "%s-store" (include "nasloop.fullname" .)) -}}
{{- end -}}

{{- define "nasloop.storeEndpoint" -}}
{{- if .Values.store.external.enabled -}}
{{- required "store.external.endpoint is required with store.external.enabled" .Values.store.external.endpoint -}}
{{- else -}}
{{- printf "%s-store:%d" (include "nasloop.fullname" .) (int .Values.store.bundled.port) -}}
{{- end -}}
{{- end -}}

{{- define "nasloop.storeEnv" -}}
- name: NASLOOP_STORE__ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ include "nasloop.storeSecret" . }}, key: access_key}}
- name: NASLOOP_STORE__SECRET_KEY
  valueFrom: {secretKeyRef: {name: {{ include "nasloop.storeSecret" . }}, key: secret_key}}
{{- end -}}

{{/* The base model as the generator and the trainer name it -------------------------------- */}}
{{- define "nasloop.modelRef" -}}
{{- $m := .Values.model -}}
{{- if eq $m.source "huggingface" -}}
{{- required "model.id is required with model.source=huggingface" $m.id -}}{{ if $m.revision }}@{{ $m.revision }}{{ end -}}
{{- else if eq $m.source "pvc" -}}
{{- $_ := required "model.pvc.claimName is required with model.source=pvc" $m.pvc.claimName -}}
{{- printf "/models/%s" (trimPrefix "/" $m.pvc.path) | trimSuffix "/" -}}
{{- else -}}
{{- $m.storeKey -}}
{{- end -}}
{{- end -}}

{{/* nasloop's configuration file (nasloop/config.py), shared by every component ----------- */}}
{{- define "nasloop.config" -}}
{{- $v := .Values -}}
{{- $full := include "nasloop.fullname" . -}}
{{- $device := ternary "cuda" "cpu" (and $v.gpu.enabled (eq $v.image.variant "gpu")) -}}
{{- $url := printf "s3://%s" $v.store.bucket -}}
{{- if $v.store.prefix }}{{ $url = printf "%s/%s" $url (trimAll "/" $v.store.prefix) }}{{ end -}}
{{- $jobs := $v.evaluator.jobs -}}
{{- /* The Jobs that the evaluator and the controller create: pull secrets, this release's
       instance label (its NetworkPolicies match it), scheduling; GPU Jobs on GPU nodes. */ -}}
{{- $instance := dict "app.kubernetes.io/instance" .Release.Name -}}
{{- $place := include "nasloop.gpuScheduling" (dict "root" . "values" $jobs "gpu" (gt (int $jobs.gpus) 0)) | fromYaml -}}
{{- $kube := dict "namespace" .Release.Namespace
      "image" (include "nasloop.image" (dict "root" . "component" "evaluator-pod" "torch" true))
      "image_pull_policy" $v.image.pullPolicy
      "image_pull_secrets" $v.image.pullSecrets
      "service_account" (printf "%s-sandbox" $full)
      "gpus" (ternary (int $jobs.gpus) 0 $v.gpu.enabled)
      "gpu_resource" $v.gpu.resource
      "tolerate_gpu_taint" false
      "cpu" $jobs.cpu "memory" $jobs.memory "ephemeral_storage" $jobs.ephemeralStorage
      "node_selector" ($place.nodeSelector | default dict)
      "tolerations" ($place.tolerations | default list)
      "affinity" ($place.affinity | default dict)
      "labels" $instance -}}
{{- $runtime := $jobs.runtimeClassName | default $place.runtimeClassName -}}
{{- if $runtime }}{{ $_ := set $kube "runtime_class" $runtime }}{{ end -}}
{{- with $jobs.priorityClassName | default $v.priorityClassName }}{{ $_ := set $kube "priority_class" . }}{{ end -}}
{{- $cj := $v.controller.cycleJobs -}}
{{- $cycles := dict "image_pull_secrets" $v.image.pullSecrets "labels" $instance
      "node_selector" $cj.nodeSelector "tolerations" $cj.tolerations "affinity" $cj.affinity -}}
{{- with $cj.priorityClassName | default $v.priorityClassName }}{{ $_ := set $cycles "priority_class" . }}{{ end -}}
{{- $derived := dict
      "store" (dict "url" $url "endpoint" (include "nasloop.storeEndpoint" .)
                    "secure" (and $v.store.external.enabled $v.store.external.secure)
                    "region" $v.store.region)
      "server" (dict "host" "0.0.0.0" "metrics_port" (int $v.metricsPort) "log_format" $v.logFormat)
      "generator" (dict "port" (int $v.generator.port) "model" (include "nasloop.modelRef" .)
                        "device" $device "cache_dir" "/var/lib/nasloop/cache/generator")
      "evaluator" (dict "port" (int $v.evaluator.port) "executor" "kubernetes" "device" $device
                        "data_dir" "/var/lib/nasloop/cache/evaluator" "kubernetes" $kube)
      "novelty" (dict "port" (int $v.novelty.port))
      "trainer" (dict "port" (int $v.trainer.port) "device" $device
                      "cache_dir" "/var/lib/nasloop/cache/trainer")
      "controller" (dict "kubernetes" $cycles) -}}
{{- if $v.tls.enabled }}
{{- /* Every service mounts its certificate at /etc/nasloop/tls and the cycle CA's at
       /etc/nasloop/tls-cycle (templates/tls.yaml, _component.tpl). */ -}}
{{- $_ := set $derived "tls" (dict "enabled" true "domain" (include "nasloop.tlsDomain" .)
      "ca_file" "/etc/nasloop/tls/ca.crt" "cert_file" "/etc/nasloop/tls/tls.crt"
      "key_file" "/etc/nasloop/tls/tls.key" "cycle_ca_file" "/etc/nasloop/tls-cycle/tls.crt") -}}
{{- $_ := set $derived.server "health_port" (int $v.tls.healthPort) -}}
{{- $_ := set $derived.controller "cycle_port" (int $v.tls.cyclePort) -}}
{{- end -}}
{{- mustMergeOverwrite $derived (deepCopy $v.config) | toYaml -}}
{{- end -}}

{{/* Security contexts --------------------------------------------------------------------- */}}
{{- define "nasloop.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities: {drop: [ALL]}
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "nasloop.gpuScheduling" -}}
{{- $g := .root.Values.gpu -}}
{{- $c := .values -}}
{{- $gpu := and .gpu $g.enabled -}}
{{- $ns := ternary (merge (deepCopy $c.nodeSelector) $g.nodeSelector) $c.nodeSelector $gpu -}}
{{- with $ns }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- $tol := ternary (concat $c.tolerations $g.tolerations) $c.tolerations $gpu -}}
{{- with $tol }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- $aff := ternary (merge (deepCopy $c.affinity) $g.affinity) $c.affinity $gpu -}}
{{- with $aff }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- if and $gpu $g.runtimeClassName }}
runtimeClassName: {{ $g.runtimeClassName }}
{{- end }}
{{- end -}}

{{/* Mutual TLS (templates/tls.yaml) ------------------------------------------------------ */}}
{{- /* The identities' trust domain: nasloop://<domain>/<role> (short enough for a common name). */ -}}
{{- define "nasloop.tlsDomain" -}}
{{- include "nasloop.fullname" . | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- /* The names a service's certificate answers to: its Service, in every form, and localhost
       (a port-forward). */ -}}
{{- define "nasloop.tlsDnsNames" -}}
{{- $svc := include "nasloop.name" . -}}
{{- $ns := .root.Release.Namespace -}}
- {{ $svc }}
- {{ $svc }}.{{ $ns }}
- {{ $svc }}.{{ $ns }}.svc
- {{ $svc }}.{{ $ns }}.svc.cluster.local
- localhost
{{- end -}}

{{- /* A CA as {cert, key, kept}: the one the cluster holds in Secret .name (lookup), else a new
       one. */ -}}
{{- define "nasloop.tlsCA" -}}
{{- $old := (lookup "v1" "Secret" .root.Release.Namespace .name).data | default dict -}}
{{- if and (index $old "tls.crt") (index $old "tls.key") -}}
cert: {{ index $old "tls.crt" | b64dec | quote }}
key: {{ index $old "tls.key" | b64dec | quote }}
kept: true
{{- else -}}
{{- $ca := genCA .cn (int .root.Values.tls.days) -}}
cert: {{ $ca.Cert | quote }}
key: {{ $ca.Key | quote }}
kept: false
{{- end -}}
{{- end -}}
