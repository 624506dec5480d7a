{{/* Chart name. */}}
{{- define "recsys.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name, prefixed unless it already contains the chart name. */}}
{{- define "recsys.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "recsys.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The three services: module, gRPC port, metrics port, health port (plaintext, grpc.health.v1 only: the
probes' port, since kubelet's gRPC probes cannot speak TLS). */}}
{{- define "recsys.components" -}}
ranker: {module: ranker_svc, port: 50051, metricsPort: 9101, healthPort: 50061}
candidate: {module: candidate_svc, port: 50052, metricsPort: 9102, healthPort: 50062}
feature: {module: feature_svc, port: 50053, metricsPort: 9103, healthPort: 50063}
{{- end -}}

{{/* The headless Service of a component, which the ranker dials: (dict "root" $ "component" "feature").
Cut to 63 characters, a Service name's limit (the fullname may have 50). */}}
{{- define "recsys.podsServiceName" -}}
{{- printf "%s-%s-pods" (include "recsys.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Secret with a service's certificate, key and CA: (dict "root" $ "component" "ranker"). */}}
{{- define "recsys.tlsSecretName" -}}
{{- default (printf "%s-%s-tls" (include "recsys.fullname" .root) .component) (get .root.Values.tls.secretNames .component) -}}
{{- end -}}

{{/* The name in the ranker's certificate: the only client feature_svc and candidate_svc accept. */}}
{{- define "recsys.rankerIdentity" -}}
{{- default (printf "%s-ranker" (include "recsys.fullname" .)) .Values.tls.rankerIdentity -}}
{{- end -}}

{{- define "recsys.callersSecretName" -}}
{{- default (printf "%s-callers" (include "recsys.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* The service account of a component's pods: its own under the mesh (the principal its policies name). */}}
{{- define "recsys.componentServiceAccount" -}}
{{- if .root.Values.mesh.istio.enabled -}}
{{- printf "%s-%s" (include "recsys.serviceAccountName" .root) .component -}}
{{- else -}}
{{- include "recsys.serviceAccountName" .root -}}
{{- end -}}
{{- end -}}

{{/* The callers file the chart renders from auth.callers, plus the helm test's caller when it calls with
the ranker's certificate (Recommend only). */}}
{{- define "recsys.callersFile" -}}
{{- $callers := list -}}
{{- range .Values.auth.callers }}{{ $callers = append $callers . }}{{ end -}}
{{- if and .Values.tests.enabled .Values.tls.enabled (not .Values.tests.tokenSecret) -}}
{{- $callers = append $callers (dict "name" "helm-test" "identity" (include "recsys.rankerIdentity" .) "methods" (list "Recommend")) -}}
{{- end -}}
{{- toYaml (dict "callers" $callers) -}}
{{- end -}}

{{/* Labels on every resource. */}}
{{- define "recsys.labels" -}}
helm.sh/chart: {{ include "recsys.chart" . }}
app.kubernetes.io/name: {{ include "recsys.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: recsys
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "ranker"). */}}
{{- define "recsys.selectorLabels" -}}
app.kubernetes.io/name: {{ include "recsys.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component, including the Prometheus job label the rules rely on. */}}
{{- define "recsys.componentLabels" -}}
{{ include "recsys.labels" .root }}
app.kubernetes.io/component: {{ .component }}
recsys.io/job: recsys-{{ .component }}
{{- end -}}

{{- define "recsys.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "recsys.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* image reference: (dict "image" .Values.image "default" .Chart.AppVersion) */}}
{{- define "recsys.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .default .image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "recsys.image" -}}
{{- include "recsys.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) -}}
{{- end -}}

{{/* The training image: retrain.image, defaulting to <image.repository>-train with the same tag. */}}
{{- define "recsys.trainImage" -}}
{{- $img := dict "repository" (default (printf "%s-train" .Values.image.repository) .Values.retrain.image.repository)
      "tag" (default .Values.image.tag .Values.retrain.image.tag) "digest" .Values.retrain.image.digest -}}
{{- include "recsys.imageRef" (dict "image" $img "default" .Chart.AppVersion) -}}
{{- end -}}

{{- define "recsys.redisEnabled" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret -}}true{{- end -}}
{{- end -}}

{{- define "recsys.redisSecretName" -}}
{{- default (printf "%s-redis" (include "recsys.fullname" .)) .Values.redis.existingSecret -}}
{{- end -}}

{{/* The Secret holding the event stream URL: stream.existingSecret, or <fullname>-stream (created by the
chart from stream.url, or by the operator). */}}
{{- define "recsys.streamSecretName" -}}
{{- default (printf "%s-stream" (include "recsys.fullname" .)) .Values.stream.existingSecret -}}
{{- end -}}

{{/* RECSYS_STREAM from that Secret (one env entry). */}}
{{- define "recsys.streamEnv" -}}
- name: RECSYS_STREAM
  valueFrom:
    secretKeyRef:
      name: {{ include "recsys.streamSecretName" . }}
      key: {{ .Values.stream.existingSecretKey }}
{{- end -}}

{{/* The rendered service configuration file (recsys.yaml). The ranker dials its dependencies through their
headless Services (every ready pod; client-side round_robin and health checking). */}}
{{- define "recsys.configFile" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $ranker := deepCopy (default dict (get $cfg "ranker_svc")) -}}
{{- if not (hasKey $ranker "feature_addr") -}}
{{- $_ := set $ranker "feature_addr" (printf "dns:///%s:50053" (include "recsys.podsServiceName" (dict "root" . "component" "feature"))) -}}
{{- end -}}
{{- if not (hasKey $ranker "candidate_addr") -}}
{{- $_ := set $ranker "candidate_addr" (printf "dns:///%s:50052" (include "recsys.podsServiceName" (dict "root" . "component" "candidate"))) -}}
{{- end -}}
{{- $_ := set $cfg "ranker_svc" $ranker -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* The models volume of the service pods (read-only) or of the retraining job (read-write). */}}
{{- define "recsys.modelsVolume" -}}
- name: models
{{- if eq .root.Values.models.storage "objectStore" }}
  emptyDir:
    sizeLimit: {{ .root.Values.models.objectStore.sizeLimit }}
{{- else }}
  persistentVolumeClaim:
    claimName: {{ ternary .root.Values.models.existingClaim (printf "%s-models" (include "recsys.fullname" .root)) (eq .root.Values.models.storage "existingClaim") }}
    {{- if .readOnly }}
    readOnly: true
    {{- end }}
{{- end }}
{{- end -}}

{{/* rclone container (object-store registry): (dict "root" $ "name" "..." "script" "...") */}}
{{- define "recsys.rcloneContainer" -}}
- name: {{ .name }}
  image: {{ printf "%s:%s" .root.Values.models.objectStore.image.repository .root.Values.models.objectStore.image.tag }}
  imagePullPolicy: IfNotPresent
  {{- with .restartPolicy }}
  restartPolicy: {{ . }}
  {{- end }}
  command: ["/bin/sh", "-ec", {{ .script | quote }}]
  env:
    - name: REMOTE
      value: {{ required "models.objectStore.remote is required when models.storage=objectStore" .root.Values.models.objectStore.remote | quote }}
    - name: MODELS
      value: {{ .root.Values.models.mountPath | quote }}
    - name: HOME
      value: /tmp
  {{- with .root.Values.models.objectStore.envFromSecret }}
  envFrom:
    - secretRef:
        name: {{ . }}
  {{- end }}
  {{- with .startupProbe }}
  startupProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  resources:
    {{- toYaml .root.Values.models.objectStore.resources | nindent 4 }}
  securityContext:
    {{- toYaml .root.Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - name: models
      mountPath: {{ .root.Values.models.mountPath }}
    - name: tmp
      mountPath: /tmp
{{- end -}}

{{/* Download the registry: bundles first, the CHAMPION pointer last, so it never names a missing bundle. */}}
{{- define "recsys.syncDownScript" -}}
rclone copy "$REMOTE" "$MODELS" --exclude CHAMPION --exclude '.*' && rclone copyto "$REMOTE/CHAMPION" "$MODELS/CHAMPION"
{{- end -}}
