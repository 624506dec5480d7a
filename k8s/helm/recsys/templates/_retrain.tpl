{{/* The retraining container (retrain.sh from the chart's files/). */}}
{{- define "recsys.retrainContainer" -}}
{{- $r := .Values.retrain -}}
- name: retrain
  image: {{ include "recsys.trainImage" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["/bin/sh", "/etc/recsys/retrain/retrain.sh"]
  env:
    {{- include "recsys.retrainEnv" . | nindent 4 }}
    # The event stream whose interactions retrain.sh exports and trains on.
    {{- include "recsys.streamEnv" . | nindent 4 }}
    - name: OMP_NUM_THREADS
      valueFrom:
        resourceFieldRef:
          resource: limits.cpu
          divisor: "1"
  resources:
    {{- toYaml $r.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - name: retrain-script
      mountPath: /etc/recsys/retrain
      readOnly: true
    - name: models
      mountPath: {{ .Values.models.mountPath }}
    {{- if $r.dataVolume }}
    - name: training-data
      mountPath: /data
      readOnly: true
    {{- end }}
    - name: tmp
      mountPath: /tmp
{{- end -}}

{{/* Environment of retrain.sh (also the RayJob's runtimeEnvYAML, so values only: RECSYS_STREAM, a
Secret reference, is added to the CronJob container above, and a RayJob inherits it from the Ray head). */}}
{{- define "recsys.retrainEnv" -}}
{{- $r := .Values.retrain -}}
- name: RECSYS_DATASET
  value: {{ required "retrain.dataset is required" $r.dataset | quote }}
- name: RECSYS_REGISTRY
  value: {{ .Values.models.mountPath | quote }}
- name: RECSYS_TUNE_TRIALS
  value: {{ $r.tune.trials | quote }}
- name: RAY_ADDRESS
  value: {{ $r.tune.rayAddress | quote }}
- name: RECSYS_PROMOTE_TOLERANCE
  value: {{ $r.promote.tolerance | quote }}
{{- if $r.trainConfig }}
- name: RECSYS_TRAIN_CONFIG
  value: /etc/recsys/retrain/train-config.yaml
{{- end }}
- name: RAY_USAGE_STATS_ENABLED
  value: "0"
{{- end -}}
